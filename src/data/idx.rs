//! The IDX file format of MNIST, read with bounds on everything.
//!
//! An IDX file is a header followed by the data, all big-endian:
//!
//! ```text
//! offset  bytes     field
//! 0       2         zero, zero
//! 2       1         element type: 0x08 = unsigned byte (the only type read here)
//! 3       1         NN = number of dimensions
//! 4       4 * NN    the dimensions d_0 .. d_{NN-1}, each a big-endian u32
//! 4+4*NN  prod(d)   the elements in row-major order
//! ```
//!
//! So MNIST's image files start with the magic `0x00000803` and three dimensions
//! (N, 28, 28), its label files with `0x00000801` and one dimension (N).
//!
//! The reader trusts nothing in the header. The dimensions are multiplied with overflow
//! checks and their product is refused above [`MAX_DATA_BYTES`] before any buffer is
//! made; the data is then read through `take(expected + 1)`, so the buffer grows only
//! with bytes that are really there and never past one byte more than the header
//! declared. That one extra byte is how trailing data is caught. A truncated file, a
//! corrupt gzip stream or trailing bytes are errors that name the file and the byte
//! offset of the problem; for a gzip file the offsets count decompressed bytes.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use byteorder::{BigEndian, ByteOrder};
use flate2::bufread::MultiGzDecoder;

use crate::error::{Error, Result};

/// The largest data section the reader accepts: 256 MiB, five times MNIST's training
/// images (47,040,000 bytes). Larger declared sizes are refused before reading.
pub const MAX_DATA_BYTES: usize = 256 << 20;

/// The element-type byte for unsigned bytes, the only type MNIST uses.
pub const TYPE_U8: u8 = 0x08;

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// An n-dimensional array of bytes read from an IDX file.
///
/// Invariant: `data.len()` is the product of `dims`.
#[derive(Clone, PartialEq, Eq)]
pub struct IdxArray {
    dims: Vec<usize>,
    data: Vec<u8>,
}

impl IdxArray {
    /// Reads an IDX file, gunzipping it if it starts with the gzip magic `1f 8b` or its
    /// name ends in `.gz`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be opened or read; [`Error::Format`], naming the
    /// file and the byte offset, if the gzip stream is corrupt or the content is not a
    /// well-formed IDX file of unsigned bytes (see [`IdxArray::from_reader`]).
    ///
    /// # Example
    ///
    /// ```
    /// use course::data::idx::IdxArray;
    /// use course::data::mnist::Mnist;
    ///
    /// let labels = IdxArray::read(Mnist::default_dir().join("t10k-labels-idx1-ubyte.gz"))?;
    /// assert_eq!(labels.dims(), &[10_000]);
    /// # Ok::<(), course::error::Error>(())
    /// ```
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io_error = |source| Error::Io { path: path.to_owned(), source };
        let mut reader = BufReader::new(File::open(path).map_err(io_error)?);
        let starts_like_gzip = reader.fill_buf().map_err(io_error)?.starts_with(&GZIP_MAGIC);
        let named_gz = path.extension().is_some_and(|ext| ext == "gz");
        if starts_like_gzip || named_gz {
            let source = format!("{} (decompressed)", path.display());
            Self::from_reader(MultiGzDecoder::new(reader), &source)
        } else {
            Self::from_reader(reader, &path.display().to_string())
        }
    }

    /// Parses an IDX file held in memory, gunzipping it first if it starts with the gzip
    /// magic `1f 8b`. `source` names the bytes in error messages (usually the file name).
    ///
    /// # Errors
    ///
    /// [`Error::Format`] naming `source` and the byte offset, as for
    /// [`IdxArray::from_reader`].
    ///
    /// # Example
    ///
    /// ```
    /// use course::data::idx::IdxArray;
    ///
    /// // magic 0x00000802: unsigned bytes, two dimensions (2, 3); then six bytes.
    /// let bytes = [0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6];
    /// let array = IdxArray::from_bytes(&bytes, "example.idx")?;
    /// assert_eq!(array.dims(), &[2, 3]);
    /// assert_eq!(array.data(), &[1, 2, 3, 4, 5, 6]);
    /// # Ok::<(), course::error::Error>(())
    /// ```
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self> {
        if bytes.starts_with(&GZIP_MAGIC) {
            Self::from_reader(MultiGzDecoder::new(bytes), &format!("{source} (decompressed)"))
        } else {
            Self::from_reader(bytes, source)
        }
    }

    /// Parses an uncompressed IDX stream. `source` names it in error messages.
    ///
    /// Memory use is bounded by the bytes the stream really holds and by
    /// [`MAX_DATA_BYTES`], whatever the header claims.
    ///
    /// # Errors
    ///
    /// [`Error::Format`] naming `source` and the byte offset of the problem if:
    /// the stream ends inside the header (truncated header); the magic does not start
    /// with two zero bytes, has an element type other than `0x08`, or declares zero
    /// dimensions; the dimensions multiply past `usize` or past [`MAX_DATA_BYTES`];
    /// the stream ends before the declared data (truncated data) or goes on after it
    /// (trailing bytes); reading fails with corrupt data (e.g. a broken gzip stream).
    /// [`Error::Io`] if reading fails for another reason.
    pub fn from_reader(mut reader: impl Read, source: &str) -> Result<Self> {
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut reader, &mut magic, source, 0)?;
        if got < magic.len() {
            return Err(Error::format(
                source,
                got as u64,
                format!("truncated header: the file ends at byte {got}, inside the 4-byte magic"),
            ));
        }
        if magic[..2] != [0, 0] {
            let hint = if magic[..2] == GZIP_MAGIC { " (this looks like gzip data)" } else { "" };
            return Err(Error::format(
                source,
                0,
                format!("bad magic 0x{:08x}: an IDX file starts with two zero bytes{hint}", BigEndian::read_u32(&magic)),
            ));
        }
        if magic[2] != TYPE_U8 {
            return Err(Error::format(
                source,
                2,
                format!(
                    "bad magic 0x{:08x}: element type 0x{:02x} is not supported, \
                     only 0x08 (unsigned byte) is",
                    BigEndian::read_u32(&magic),
                    magic[2]
                ),
            ));
        }
        let ndims = usize::from(magic[3]);
        if ndims == 0 {
            return Err(Error::format(source, 3, "bad magic 0x00000800: zero dimensions"));
        }

        // At most 255 * 4 bytes: the allocation is bounded by the magic's one byte.
        let header_len = 4 + 4 * ndims;
        let mut dim_bytes = vec![0u8; 4 * ndims];
        let got = read_up_to(&mut reader, &mut dim_bytes, source, 4)?;
        if got < dim_bytes.len() {
            let end = 4 + got;
            return Err(Error::format(
                source,
                end as u64,
                format!(
                    "truncated header: {ndims} dimensions need bytes 4..{header_len}, \
                     but the file ends at byte {end}"
                ),
            ));
        }
        let dims: Vec<usize> = dim_bytes.chunks_exact(4).map(|b| BigEndian::read_u32(b) as usize).collect();

        // The product of the dimensions, refused before any buffer is made for it.
        let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= MAX_DATA_BYTES).ok_or_else(|| {
            Error::format(
                source,
                4,
                format!(
                    "dimensions {dims:?} declare more data than the reader's cap of \
                         {MAX_DATA_BYTES} bytes"
                ),
            )
        })?;

        // Read at most one byte more than declared: enough to detect trailing data,
        // never enough to let a lying header or a gzip bomb fill memory.
        let mut data = Vec::new();
        let read = reader.take(expected as u64 + 1).read_to_end(&mut data);
        if let Err(e) = read {
            return Err(read_error(e, source, (header_len + data.len()) as u64));
        }
        let data_end = header_len + expected;
        if data.len() < expected {
            let end = header_len + data.len();
            return Err(Error::format(
                source,
                end as u64,
                format!(
                    "truncated data: dimensions {dims:?} need {expected} bytes, \
                     up to byte {data_end}, but the file ends at byte {end}"
                ),
            ));
        }
        if data.len() > expected {
            return Err(Error::format(
                source,
                data_end as u64,
                format!(
                    "trailing bytes: dimensions {dims:?} declare {expected} bytes of data, \
                     ending at byte {data_end}, but the file goes on"
                ),
            ));
        }
        Ok(IdxArray { dims, data })
    }

    /// The dimensions, outermost first, e.g. `[60000, 28, 28]`.
    #[must_use]
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The elements in row-major order; `data().len()` is the product of `dims()`.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The length of the header in the file: the magic and one u32 per dimension.
    /// Element `i` of [`IdxArray::data`] sits at byte `header_len() + i`.
    #[must_use]
    pub fn header_len(&self) -> usize {
        4 + 4 * self.dims.len()
    }

    /// Takes the elements out of the array without copying them.
    #[must_use]
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

/// Shows the dimensions and the data length, not 47 million bytes.
impl fmt::Debug for IdxArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdxArray").field("dims", &self.dims).field("data", &format_args!("[{} bytes]", self.data.len())).finish()
    }
}

/// Fills `buf` as far as the stream allows and returns how many bytes it got; fewer
/// than `buf.len()` means the stream ended. `offset` is where `buf` starts in the file.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8], source: &str, offset: u64) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e, source, offset + filled as u64)),
        }
    }
    Ok(filled)
}

/// Maps a failed read at `offset` to an error: corrupt data (what a broken gzip stream
/// reports) is a format error at that offset, anything else an I/O error.
fn read_error(e: io::Error, source: &str, offset: u64) -> Error {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            Error::format(source, offset, format!("corrupt or truncated gzip stream: {e}"))
        }
        _ => Error::Io { path: source.into(), source: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IDX file built from the spec: magic, big-endian dims, then the bytes.
    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0, 0, TYPE_U8, dims.len() as u8];
        for &d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(data);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use flate2::{write::GzEncoder, Compression};
        use std::io::Write;
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// Parses `bytes`, expects an error, and checks that its message names the source
    /// and the offset, and says `what`.
    fn assert_format_error(bytes: &[u8], offset: u64, what: &str) {
        let err = IdxArray::from_bytes(bytes, "bad.idx").unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, Error::Format { offset: o, .. } if *o == offset),
            "expected a format error at offset {offset}, got: {message}"
        );
        assert!(message.contains("bad.idx"), "message does not name the file: {message}");
        assert!(message.contains(&format!("byte offset {offset}")), "message does not name offset {offset}: {message}");
        assert!(message.contains(what), "message does not say {what:?}: {message}");
    }

    #[test]
    fn reads_a_hand_built_file() {
        let array = IdxArray::from_bytes(&idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6]), "ok.idx").unwrap();
        assert_eq!(array.dims(), &[2, 3]);
        assert_eq!(array.data(), &[1, 2, 3, 4, 5, 6]);
        assert_eq!(array.header_len(), 12);
    }

    #[test]
    fn reads_gzip_in_memory_and_on_disk() {
        let plain = idx_bytes(&[4], &[9, 8, 7, 6]);
        let packed = gzip(&plain);
        let from_memory = IdxArray::from_bytes(&packed, "ok.idx.gz").unwrap();
        assert_eq!(from_memory, IdxArray::from_bytes(&plain, "ok.idx").unwrap());

        let dir = std::env::temp_dir().join(format!("course-idx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.idx.gz"), &packed).unwrap();
        std::fs::write(dir.join("a.idx"), &plain).unwrap();
        assert_eq!(IdxArray::read(dir.join("a.idx.gz")).unwrap(), from_memory);
        assert_eq!(IdxArray::read(dir.join("a.idx")).unwrap(), from_memory);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_dimension_gives_empty_data() {
        let array = IdxArray::from_bytes(&idx_bytes(&[0, 28, 28], &[]), "empty.idx").unwrap();
        assert_eq!(array.dims(), &[0, 28, 28]);
        assert!(array.data().is_empty());
    }

    #[test]
    fn bad_magic_is_refused() {
        let mut bytes = idx_bytes(&[1], &[0]);
        bytes[1] = 0x01;
        assert_format_error(&bytes, 0, "bad magic 0x00010801");
        bytes[1] = 0;
        bytes[2] = 0x0D; // float32 in the IDX spec, not read here
        assert_format_error(&bytes, 2, "element type 0x0d");
        assert_format_error(&[0, 0, 8, 0], 3, "zero dimensions");
    }

    #[test]
    fn truncated_header_is_refused() {
        assert_format_error(&[], 0, "truncated header");
        assert_format_error(&[0, 0, 8], 3, "truncated header");
        // Three dimensions need bytes 4..16; the file stops at byte 10.
        let bytes = idx_bytes(&[1, 28, 28], &[]);
        assert_format_error(&bytes[..10], 10, "need bytes 4..16");
    }

    #[test]
    fn truncated_data_is_refused() {
        let bytes = idx_bytes(&[2, 3], &[1, 2, 3, 4]);
        assert_format_error(&bytes, 16, "truncated data");
        // The same in a gzip stream: the offset counts decompressed bytes.
        let err = IdxArray::from_bytes(&gzip(&bytes), "bad.idx.gz").unwrap_err().to_string();
        assert!(err.contains("bad.idx.gz (decompressed)") && err.contains("offset 16"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let bytes = idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6, 7]);
        assert_format_error(&bytes, 18, "trailing bytes");
    }

    #[test]
    fn sizes_past_the_cap_or_usize_are_refused_before_reading() {
        // 4 * 65536 * 65536 = 2^34 bytes: past the cap, and the file holds none of them.
        assert_format_error(&idx_bytes(&[4, 65536, 65536], &[]), 4, "cap");
        // 2^32 - 1 to the 4th power overflows a 64-bit usize.
        let max = u32::MAX;
        assert_format_error(&idx_bytes(&[max, max, max, max], &[]), 4, "cap");
    }

    #[test]
    fn corrupt_gzip_is_a_format_error() {
        let mut packed = gzip(&idx_bytes(&[64], &[7; 64]));
        let len = packed.len();
        packed.truncate(len - 12); // cut into the deflate stream and its trailer
        let err = IdxArray::from_bytes(&packed, "cut.idx.gz").unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err}");
        assert!(err.to_string().contains("cut.idx.gz"), "{err}");
    }

    /// A file is gunzipped if it starts like gzip, whatever its name, and if its
    /// name ends in `.gz`, whatever it starts with (where gunzipping plain bytes
    /// fails, naming the file).
    #[test]
    fn gzip_is_known_by_its_magic_or_its_name() {
        let plain = idx_bytes(&[3], &[4, 5, 6]);
        let dir = std::env::temp_dir().join(format!("course-idx-name-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("packed.idx"), gzip(&plain)).unwrap();
        std::fs::write(dir.join("plain.idx.gz"), &plain).unwrap();
        assert_eq!(IdxArray::read(dir.join("packed.idx")).unwrap().data(), &[4, 5, 6]);
        let err = IdxArray::read(dir.join("plain.idx.gz")).unwrap_err().to_string();
        assert!(err.contains("plain.idx.gz (decompressed)"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Gzip bytes handed to the plain reader are refused with a hint; other
    /// bad magics get none.
    #[test]
    fn gzip_bytes_read_as_plain_idx_get_a_hint() {
        let packed = gzip(&idx_bytes(&[1], &[0]));
        let err = IdxArray::from_reader(packed.as_slice(), "data.bin").unwrap_err().to_string();
        assert!(err.contains("bad magic 0x1f8b") && err.contains("(this looks like gzip data)"), "{err}");
        let err = IdxArray::from_reader([0u8, 1, 8, 1].as_slice(), "data.bin").unwrap_err().to_string();
        assert!(err.contains("bad magic 0x00010801") && !err.contains("gzip"), "{err}");
    }

    /// Hands out `bytes`, then fails with `kind`, as a gzip decoder does on
    /// corrupt data.
    struct FailsAfter {
        bytes: Vec<u8>,
        pos: usize,
        kind: io::ErrorKind,
    }

    impl Read for FailsAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.bytes.len() {
                return Err(io::Error::new(self.kind, "broken stream"));
            }
            let n = buf.len().min(self.bytes.len() - self.pos).min(4);
            buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// A read that fails inside the data is a format error at the offset of the
    /// first byte not read (header plus the data read so far) for corrupt data,
    /// and an I/O error naming the source otherwise.
    #[test]
    fn a_failed_read_inside_the_data_names_its_offset() {
        // dims [64]: an 8-byte header, then 10 of the 64 data bytes.
        let bytes = idx_bytes(&[64], &[7; 10]);
        let reader = FailsAfter { bytes: bytes.clone(), pos: 0, kind: io::ErrorKind::InvalidData };
        let err = IdxArray::from_reader(reader, "cut.idx").unwrap_err();
        assert!(matches!(err, Error::Format { offset: 18, .. }), "{err}");
        assert!(err.to_string().contains("corrupt or truncated gzip stream"), "{err}");
        // Inside the header: the offset counts the header bytes read.
        let reader = FailsAfter { bytes: bytes[..6].to_vec(), pos: 0, kind: io::ErrorKind::UnexpectedEof };
        assert!(matches!(IdxArray::from_reader(reader, "cut.idx").unwrap_err(), Error::Format { offset: 6, .. }));
        let reader = FailsAfter { bytes, pos: 0, kind: io::ErrorKind::PermissionDenied };
        let err = IdxArray::from_reader(reader, "cut.idx").unwrap_err();
        assert!(matches!(&err, Error::Io { path, .. } if path.to_str() == Some("cut.idx")), "{err}");
    }

    /// Every other read is interrupted (as by a signal), and then retried.
    struct Interrupted<'a> {
        bytes: &'a [u8],
        interrupt: bool,
    }

    impl Read for Interrupted<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.bytes.read(buf)
        }
    }

    #[test]
    fn interrupted_reads_are_retried() {
        let bytes = idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let array = IdxArray::from_reader(Interrupted { bytes: &bytes, interrupt: false }, "slow.idx").unwrap();
        assert_eq!((array.dims(), array.data()), (&[2, 3][..], &[1, 2, 3, 4, 5, 6][..]));
    }

    #[test]
    fn debug_shows_the_dims_and_the_data_length() {
        let array = IdxArray::from_bytes(&idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6]), "ok.idx").unwrap();
        assert_eq!(format!("{array:?}"), "IdxArray { dims: [2, 3], data: [6 bytes] }");
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let err = IdxArray::read("/nonexistent/none.idx").unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("/nonexistent/none.idx"), "{err}");
    }
}
