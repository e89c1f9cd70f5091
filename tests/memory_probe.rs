//! The memory probe of `ddpm train` (`course::run::memory::bytes_per_example`),
//! alone in its own test process: the probe reads the process's peak resident
//! memory, which other tests running beside it would move either way (an
//! allocation raises it, a free lowers the level the probe's growth starts from).

use course::run::memory::{bytes_per_example, PROBE_BATCH};

#[test]
fn the_probe_sees_an_allocation_of_its_batch() {
    // PROBE_BATCH examples of 4 MB each, touched so that they are resident.
    const PER_EXAMPLE: usize = 4_000_000;
    let per = bytes_per_example(|b| {
        assert_eq!(b, PROBE_BATCH);
        let v = vec![1u8; b * PER_EXAMPLE];
        assert_eq!(std::hint::black_box(&v).iter().map(|&x| u64::from(x)).sum::<u64>(), (b * PER_EXAMPLE) as u64);
        Ok(())
    })
    .unwrap();
    match per {
        // 4 MB an example, within the few pages the test harness itself touches.
        Some(per) => assert!((3_900_000..=4_400_000).contains(&per), "{per} bytes per example, allocated {PER_EXAMPLE}"),
        None => eprintln!("skipping: this system has no /proc/self/clear_refs or VmHWM"),
    }
}
