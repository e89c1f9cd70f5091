//! Property test of the file readers: on thousands of truncated and mutated IDX and
//! safetensors files, every call returns `Ok` or `Err`, none panics, and none makes a
//! buffer sized by what a header claims.
//!
//! A panic anywhere fails the test; nothing is caught. Allocation is measured, not
//! assumed: this test binary's global allocator records the largest single allocation
//! each reader call makes, and every call must stay under [`ALLOCATION_LIMIT`], while the
//! mutated headers claim up to 2^64 bytes. The inputs come from one seeded ChaCha8Rng,
//! so a failure reproduces exactly; the failing input is printed in hex.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{Read, Write};

use course::data::idx::IdxArray;
use course::data::mnist::Mnist;
use flate2::{read::MultiGzDecoder, write::GzEncoder, Compression};
use nn::safetensors::{NamedTensor, SafeTensors, TensorData, MAX_HEADER_LEN};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Mutated files per seed file.
const CASES: usize = 3000;

/// The largest single allocation a reader call may make. The inputs are at most a few
/// kilobytes (a gzip one decompresses to at most ~40 KB), the decoder's state is ~40 KB,
/// and the headers claim up to 256 MiB (IDX) or 2^64 bytes (safetensors): a reader that
/// trusted a header would go far past this.
const ALLOCATION_LIMIT: usize = 1 << 20;

const SEED: u64 = 0x5eed_f11e;

// ---------------------------------------------------------------------------------------
// Allocation meter: the system allocator, recording the largest request per thread.

thread_local! {
    static LARGEST_ALLOCATION: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: the thread-local may be gone while a thread shuts down.
    let _ = LARGEST_ALLOCATION.try_with(|largest| largest.set(largest.get().max(size)));
}

struct Meter;

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract;
// recording a size in a const-initialised thread-local does not allocate.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// Runs `f` and checks that no single allocation it made exceeded [`ALLOCATION_LIMIT`].
fn bounded<T>(input: &[u8], f: impl FnOnce() -> T) -> T {
    LARGEST_ALLOCATION.with(|largest| largest.set(0));
    let out = f();
    let largest = LARGEST_ALLOCATION.with(Cell::get);
    assert!(largest <= ALLOCATION_LIMIT, "allocated {largest} bytes at once reading a {}-byte input: {}", input.len(), hex(input));
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Generic mutations.

/// One to four random edits: truncate, flip a bit, overwrite a byte (often with an
/// extreme value), insert, remove, or append bytes.
fn mutate(rng: &mut ChaCha8Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len();
        match rng.random_range(0..6) {
            0 => out.truncate(rng.random_range(0..=len)),
            1 if len > 0 => out[rng.random_range(0..len)] ^= 1 << rng.random_range(0..8),
            2 if len > 0 => {
                let value = [0x00, 0xff, 0x7f, 0x80, rng.random()][rng.random_range(0..5)];
                out[rng.random_range(0..len)] = value;
            }
            3 => out.insert(rng.random_range(0..=len), rng.random()),
            4 if len > 0 => {
                out.remove(rng.random_range(0..len));
            }
            _ => out.extend((0..rng.random_range(1..16)).map(|_| rng.random::<u8>())),
        }
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

// ---------------------------------------------------------------------------------------
// IDX.

/// An IDX file from the spec: magic 0x000008NN, big-endian u32 dims, the bytes.
fn idx_file(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

/// The first four MNIST test images as a valid IDX file (N = 4), and the first 4 KiB of
/// the real gzip file (a truncated gzip stream).
fn mnist_seeds() -> (Vec<u8>, Vec<u8>) {
    let gz = std::fs::read(Mnist::default_dir().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let mut prefix = vec![0; 16 + 4 * 784];
    MultiGzDecoder::new(&gz[..]).read_exact(&mut prefix).unwrap();
    assert_eq!(prefix[..8], [0, 0, 8, 3, 0, 0, 0x27, 0x10], "magic, N = 10000");
    prefix[4..8].copy_from_slice(&4u32.to_be_bytes());
    (prefix, gz[..4096].to_vec())
}

/// Reads `input` and checks what a successful read must satisfy.
fn read_idx(input: &[u8]) -> Result<IdxArray, course::error::Error> {
    let result = bounded(input, || IdxArray::from_bytes(input, "fuzz.idx"));
    match &result {
        Ok(array) => {
            let numel: usize = array.dims().iter().product();
            assert_eq!(array.data().len(), numel, "{}", hex(input));
            if !input.starts_with(&[0x1f, 0x8b]) {
                assert_eq!(array.header_len() + numel, input.len(), "{}", hex(input));
            }
        }
        Err(e) => assert!(e.to_string().contains("fuzz.idx"), "{e}"),
    }
    result
}

#[test]
fn idx_prefixes_are_errors_at_their_own_length() {
    let small = idx_file(&[3, 4, 5], &(0..60).collect::<Vec<u8>>());
    let (mnist, _) = mnist_seeds();
    for file in [&small, &mnist] {
        assert!(read_idx(file).is_ok());
        for len in 0..file.len() {
            match read_idx(&file[..len]) {
                Err(course::error::Error::Format { offset, .. }) => {
                    assert_eq!(offset, len as u64, "a file cut at byte {len} fails there")
                }
                other => panic!("prefix of {len} bytes gave {other:?}"),
            }
        }
    }
    // Every prefix of the gzip form fails too, at whatever decompressed offset.
    let packed = gzip(&small);
    for len in 0..packed.len() {
        assert!(read_idx(&packed[..len]).is_err(), "gzip prefix of {len} bytes");
    }
}

#[test]
fn mutated_idx_files_return_ok_or_err() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let small = idx_file(&[3, 4, 5], &(0..60).collect::<Vec<u8>>());
    let (mnist, mnist_gz_prefix) = mnist_seeds();
    let seeds = [gzip(&small), small, mnist, mnist_gz_prefix];
    let mut outcomes = [0usize; 2];
    for seed in &seeds {
        for _ in 0..CASES {
            outcomes[usize::from(read_idx(&mutate(&mut rng, seed)).is_ok())] += 1;
        }
    }
    // Most mutations break the file; a few (a changed pixel) leave it valid.
    let [errors, oks] = outcomes;
    assert!(errors > CASES && oks > 10, "{errors} errors, {oks} successes");
}

#[test]
fn huge_idx_dimensions_are_refused_without_allocating() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED + 1);
    let small = idx_file(&[3, 4, 5], &(0..60).collect::<Vec<u8>>());
    let (mnist, _) = mnist_seeds();
    for _ in 0..CASES {
        let seed = if rng.random() { &small } else { &mnist };
        let mut file = seed.clone();
        // Dims at least 2^24 each: the product is 16 MiB or more (up to 2^96, which
        // overflows), never what the file holds.
        let dim = 4 + 4 * rng.random_range(0..3);
        let huge: u32 = [u32::MAX, 0x7fff_ffff, 0x1000_0000, 0x0100_0000, rng.random_range(1 << 24..=u32::MAX)][rng.random_range(0..5)];
        file[dim..dim + 4].copy_from_slice(&huge.to_be_bytes());
        let packed = rng.random_bool(0.25);
        let input = if packed { gzip(&file) } else { file };
        let message = read_idx(&input).unwrap_err().to_string();
        assert!(message.contains("cap") || message.contains("truncated data"), "{message}");
    }
}

// ---------------------------------------------------------------------------------------
// Safetensors.

fn valid_safetensors() -> Vec<u8> {
    let tensor = |name: &str, shape: &[usize], data| NamedTensor { name: name.into(), shape: shape.to_vec(), data };
    let file = SafeTensors {
        tensors: vec![
            tensor("conv.weight", &[2, 1, 3], TensorData::F32(vec![0.5, -1.0, 2.0, f32::NAN, -0.0, 3.0])),
            tensor("betas", &[3], TensorData::F64(vec![1e-4, 0.01, 0.02])),
            tensor("scale", &[], TensorData::F32(vec![1.0])),
            tensor("empty", &[0, 2], TensorData::F32(vec![])),
        ],
        metadata: BTreeMap::from([("step".into(), "7".into())]),
    };
    file.to_bytes().unwrap()
}

/// Reads `input`; a successful read must hold no more data than the file, and writing
/// it back and reading again must give the same bytes.
fn read_safetensors(input: &[u8]) -> Result<SafeTensors, nn::Error> {
    let result = bounded(input, || SafeTensors::from_bytes(input, "fuzz.safetensors"));
    match &result {
        Ok(file) => {
            let data_bytes: usize = file.tensors.iter().map(|t| t.data.len() * t.data.element_size()).sum();
            assert!(data_bytes <= input.len(), "{}", hex(input));
            let written = file.to_bytes().unwrap();
            let again = SafeTensors::from_bytes(&written, "rewritten").unwrap();
            assert_eq!(again.to_bytes().unwrap(), written, "{}", hex(input));
        }
        Err(e) => assert!(e.to_string().contains("fuzz.safetensors"), "{e}"),
    }
    result
}

/// Header-aware edits that keep the length prefix consistent, so the input gets past
/// the length check into the entry validation: replace a number with a huge or odd
/// one, change a dtype, or duplicate an entry.
fn mutate_header(rng: &mut ChaCha8Rng, bytes: &[u8]) -> Vec<u8> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
    let data = &bytes[8 + header_len..];
    match rng.random_range(0..3) {
        0 => {
            let digits: Vec<usize> = header.match_indices(|c: char| c.is_ascii_digit()).map(|(i, _)| i).collect();
            let at = digits[rng.random_range(0..digits.len())];
            let replacement = [
                "0".to_string(),
                u64::MAX.to_string(),
                "18446744073709551616".into(), // 2^64: past u64
                (1u64 << 32).to_string(),
                "1e3".into(),
                "-1".into(),
                rng.random_range(0..100u32).to_string(),
            ][rng.random_range(0..7)]
            .clone();
            header.replace_range(at..at + 1, &replacement);
        }
        1 => {
            let dtype = ["F64", "F32", "BF16", "I64", "f32", ""][rng.random_range(0..6)];
            let at = header.match_indices("F32").map(|(i, _)| i).next().unwrap();
            header.replace_range(at..at + 3, dtype);
        }
        _ => {
            // Repeat the first tensor entry under the same name.
            let start = header.find("\"conv.weight\"").unwrap();
            let end = start + header[start..].find('}').unwrap() + 1;
            let entry = header[start..end].to_string();
            header.insert_str(end, &format!(",{entry}"));
        }
    }
    let header = header.trim_end().to_string();
    let padded = format!("{header:<width$}", width = header.len().next_multiple_of(8));
    let mut out = (padded.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(padded.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn safetensors_prefixes_are_errors() {
    let file = valid_safetensors();
    assert!(read_safetensors(&file).is_ok());
    for len in 0..file.len() {
        assert!(read_safetensors(&file[..len]).is_err(), "prefix of {len} bytes");
    }
}

#[test]
fn mutated_safetensors_files_return_ok_or_err() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED + 2);
    let file = valid_safetensors();
    let mut outcomes = [0usize; 2];
    for _ in 0..CASES {
        outcomes[usize::from(read_safetensors(&mutate(&mut rng, &file)).is_ok())] += 1;
        outcomes[usize::from(read_safetensors(&mutate_header(&mut rng, &file)).is_ok())] += 1;
    }
    let [errors, oks] = outcomes;
    assert!(errors > CASES && oks > 10, "{errors} errors, {oks} successes");
}

#[test]
fn huge_safetensors_header_lengths_are_refused_without_allocating() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED + 3);
    let file = valid_safetensors();
    let real = u64::from_le_bytes(file[..8].try_into().unwrap());
    for _ in 0..CASES {
        let mut input = file.clone();
        let claimed = [
            u64::MAX,
            MAX_HEADER_LEN + 1,
            MAX_HEADER_LEN,
            file.len() as u64 - 7,
            rng.random_range(file.len() as u64 - 7..=u64::MAX),
            // Shorter than the real header: the JSON is cut.
            rng.random_range(0..real),
        ][rng.random_range(0..6)];
        input[..8].copy_from_slice(&claimed.to_le_bytes());
        assert!(read_safetensors(&input).is_err(), "header length {claimed}");
    }
}
