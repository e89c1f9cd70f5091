//! The cache-block sizes `MC, KC, NC`, chosen at run time from the cache sizes
//! of the CPU the program runs on.
//!
//! Constants tuned on one CPU are wrong on the next: an `MC x KC` A~ block
//! sized for a 2 MiB L2 spills out of a 1 MiB one, and a B~ block sized for
//! a 32 MiB L3 out of an 8 MiB one. So each block is sized for the cache
//! level that serves its reuse (see the loop diagram in `mod.rs`):
//!
//! - `KC`: the `KC x NR` B~ micro-panel streams from L2 while LOOP 1 runs
//!   every A~ micro-panel past it (the AVX-512 kernel asks for each of its
//!   rows eight rank-1 updates ahead, `PREFETCH_STEPS`). It takes at most a
//!   sixteenth of L2, up to 512: 512 on every core this project has run on
//!   (1 MiB or 2 MiB of L2). A larger `KC` means fewer `kc` blocks in LOOP
//!   4, and each costs one more pass of loads and stores over C, so it beats
//!   keeping the micro-panel in L1, the rule until session 45: on the Intel
//!   Xeon with 48 KiB L1d and 2 MiB L2, `KC = 512` (a 64 KiB micro-panel) against the L1 rule's 192, two
//!   threads, medians of 40 alternations: n = 512 187 against 164 GFLOP/s, n =
//!   1024 248 against 228, n = 2048 188 against 171, n = 256 126 against 119;
//!   on the AMD EPYC with 32 KiB L1d and 1 MiB L2 (family 25 model 17), 512
//!   against the L1 rule's 128, `ddpm bench` alternated three times: n = 1024
//!   208-216 against 193-199, n = 2048 207-216 against 186-197, n = 512
//!   203-210 against 141-199, the UNets' steps and convolutions unchanged.
//!   (The AMD EPYC of family 26 model 2, 48 KiB L1d and 1 MiB L2, where the
//!   L1 rule gave 192, has not run this rule.)
//! - `MC`: the `MC x KC` A~ block stays in L2 while LOOP 2 runs every B~
//!   micro-panel past it. It gets 3/16 of L2, leaving room for the B~
//!   micro-panels streaming through and for the C tiles written back.
//! - `NC`: the `KC x NC` B~ block stays in L3 while LOOP 3 packs and runs every
//!   A~ block. It gets 3/16 of L3, counted at most 16 MiB (a large shared L3
//!   is shared with the other cores).
//!
//! For the AVX-512 f32 kernel (12 x 32) a 1 MiB L2 and a 32 MiB L3 (the AMD
//! EPYCs) give `KC = 512, MC = 96, NC = 1536`; a 2 MiB L2 (the Intel Xeons),
//! `KC = 512, MC = 192`.
//!
//! The sizes are read from Linux's `/sys/devices/system/cpu/cpu0/cache`; where
//! that is missing, a common x86 core is assumed (32 KiB, 1 MiB, 8 MiB).

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

/// Largest `KC` the rules below choose, whatever the caches (a bound for
/// buffers sized by it, such as the row offsets of a B read in place).
pub(crate) const MAX_KC: usize = 512;

/// Data-cache sizes of one core, in bytes, and where they were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    /// Level-1 data cache.
    pub l1d: usize,
    /// Level-2 cache.
    pub l2: usize,
    /// Level-3 cache (shared by the cores of a complex).
    pub l3: usize,
    /// `"sysfs"` or `"assumed"`.
    pub source: &'static str,
}

impl CacheSizes {
    /// The assumption when the machine does not say: a common x86 server core.
    pub const ASSUMED: CacheSizes = CacheSizes { l1d: 32 << 10, l2: 1 << 20, l3: 8 << 20, source: "assumed" };

    /// The caches of the CPU running the program, read once.
    pub fn detect() -> CacheSizes {
        static DETECTED: OnceLock<CacheSizes> = OnceLock::new();
        *DETECTED.get_or_init(|| CacheSizes::from_sysfs(Path::new("/sys/devices/system/cpu/cpu0/cache")).unwrap_or(CacheSizes::ASSUMED))
    }

    /// Reads `index*/{level,type,size}` under `dir`; `None` unless L1d and L2 are
    /// both there (L3 falls back to the assumed size).
    fn from_sysfs(dir: &Path) -> Option<CacheSizes> {
        let (mut l1d, mut l2, mut l3) = (None, None, None);
        for entry in fs::read_dir(dir).ok()?.flatten() {
            let read = |name: &str| fs::read_to_string(entry.path().join(name)).ok().map(|s| s.trim().to_string());
            let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else { continue };
            let Some(bytes) = parse_size(&size) else { continue };
            match (level.as_str(), kind.as_str()) {
                ("1", "Data") => l1d = Some(bytes),
                ("2", "Unified" | "Data") => l2 = Some(bytes),
                ("3", "Unified" | "Data") => l3 = Some(bytes),
                _ => {}
            }
        }
        Some(CacheSizes { l1d: l1d?, l2: l2?, l3: l3.unwrap_or(CacheSizes::ASSUMED.l3), source: "sysfs" })
    }
}

/// `"48K"`, `"1024K"`, `"32M"` or plain bytes.
fn parse_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.as_bytes().last()? {
        b'K' => (&text[..text.len() - 1], 1 << 10),
        b'M' => (&text[..text.len() - 1], 1 << 20),
        b'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<usize>().ok().filter(|&n| n > 0).map(|n| n * unit)
}

/// The block sizes of the five loops for one microkernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of A packed at once into A~ (LOOP 3 step); a multiple of `MR`.
    pub mc: usize,
    /// Depth of the packed panels (LOOP 4 step).
    pub kc: usize,
    /// Columns of B packed at once into B~ (LOOP 5 step); a multiple of `NR`.
    pub nc: usize,
}

impl Blocking {
    /// The blocks for an `mr x nr` register tile of `elem_bytes`-byte numbers on
    /// a CPU with `caches` (see the module docs for the rules).
    #[must_use]
    pub fn for_caches(caches: CacheSizes, mr: usize, nr: usize, elem_bytes: usize) -> Blocking {
        // KC: a multiple of 16 keeps the packed panels' rows cache-line aligned.
        let kc = (caches.l2 / 16 / (nr * elem_bytes) / 16 * 16).clamp(64, MAX_KC);
        let mc = (caches.l2 * 3 / 16 / (kc * elem_bytes) / mr * mr).clamp(mr, 1020 / mr * mr);
        let nc = (caches.l3.min(16 << 20) * 3 / 16 / (kc * elem_bytes) / nr * nr).clamp(8 * nr, 8192 / nr * nr);
        Blocking { mc, kc, nc }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_their_units() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("0K"), None);
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn sysfs_layout_is_read_and_a_missing_level_falls_back() {
        let dir = std::env::temp_dir().join(format!("gemm-blocking-{}", std::process::id()));
        let write = |index: &str, level: &str, kind: &str, size: &str| {
            let d = dir.join(index);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("level"), level).unwrap();
            fs::write(d.join("type"), kind).unwrap();
            fs::write(d.join("size"), size).unwrap();
        };
        write("index0", "1", "Data\n", "48K\n");
        write("index1", "1", "Instruction", "32K");
        assert_eq!(CacheSizes::from_sysfs(&dir), None, "no L2");
        write("index2", "2", "Unified", "1024K");
        let caches = CacheSizes::from_sysfs(&dir).unwrap();
        assert_eq!((caches.l1d, caches.l2, caches.l3, caches.source), (48 << 10, 1 << 20, CacheSizes::ASSUMED.l3, "sysfs"));
        write("index3", "3", "Unified", "32768K");
        assert_eq!(CacheSizes::from_sysfs(&dir).unwrap().l3, 32 << 20);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn blocks_fit_the_cache_each_one_lives_in() {
        let zen = CacheSizes { l1d: 32 << 10, l2: 1 << 20, l3: 32 << 20, source: "test" };
        let xeon = CacheSizes { l1d: 48 << 10, l2: 2 << 20, l3: 260 << 20, source: "test" };
        let small_l2 = CacheSizes { l1d: 32 << 10, l2: 256 << 10, l3: 8 << 20, source: "test" };
        // The AVX-512 f32 kernel: 12 x 32.
        assert_eq!(Blocking::for_caches(zen, 12, 32, 4), Blocking { mc: 96, kc: 512, nc: 1536 });
        assert_eq!(Blocking::for_caches(xeon, 12, 32, 4), Blocking { mc: 192, kc: 512, nc: 1536 });
        assert_eq!(Blocking::for_caches(small_l2, 12, 32, 4), Blocking { mc: 96, kc: 128, nc: 3072 });
        assert_eq!(Blocking::for_caches(CacheSizes::ASSUMED, 12, 32, 4), Blocking { mc: 96, kc: 512, nc: 768 });
        // Where the bounds bind: MC at most 1020 rows (a huge L2), NC at most
        // 8192 columns (KC at its floor of 64 under a large L3).
        let huge_l2 = CacheSizes { l1d: 48 << 10, l2: 32 << 20, l3: 64 << 20, source: "test" };
        assert_eq!(Blocking::for_caches(huge_l2, 12, 32, 4), Blocking { mc: 1020, kc: 512, nc: 1536 });
        let tiny_l2 = CacheSizes { l1d: 32 << 10, l2: 128 << 10, l3: 32 << 20, source: "test" };
        assert_eq!(Blocking::for_caches(tiny_l2, 12, 32, 4), Blocking { mc: 96, kc: 64, nc: 8192 });
        for caches in [zen, xeon, small_l2, huge_l2, tiny_l2, CacheSizes::ASSUMED] {
            for (mr, nr, bytes) in [(12, 32, 4), (6, 16, 4), (8, 16, 8), (6, 8, 8)] {
                let b = Blocking::for_caches(caches, mr, nr, bytes);
                assert!(b.kc <= MAX_KC && b.kc * nr * bytes <= caches.l2 / 16, "{b:?}: B~ micro-panel in a sixteenth of L2");
                assert!(b.mc * b.kc * bytes <= caches.l2 / 4, "{b:?}: A~ block in a quarter of L2");
                assert!(b.mc.is_multiple_of(mr) && b.nc.is_multiple_of(nr) && b.kc.is_multiple_of(16), "{b:?}: whole tiles");
            }
        }
    }
}
