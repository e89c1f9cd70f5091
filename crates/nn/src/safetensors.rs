//! The safetensors checkpoint format, written and read by hand.
//!
//! A safetensors file is three parts:
//!
//! ```text
//! offset   bytes  field
//! 0        8      N, the header length, a little-endian u64
//! 8        N      the header: UTF-8 JSON, padded with spaces to a multiple of 8
//! 8 + N    rest   the data: each tensor's elements, little-endian, row-major
//! ```
//!
//! The header is one JSON object with an entry per tensor and an optional
//! `"__metadata__"` entry of string-to-string pairs:
//!
//! ```text
//! {"__metadata__": {"step": "1000"},
//!  "conv.weight": {"dtype": "F32", "shape": [8, 1, 3, 3], "data_offsets": [0, 288]},
//!  "conv.bias":   {"dtype": "F32", "shape": [8],          "data_offsets": [288, 320]}}
//! ```
//!
//! `data_offsets` are `[begin, end)` byte offsets into the data part (so the tensor sits
//! at file bytes `8 + N + begin .. 8 + N + end`). The tensors tile the data part: no
//! gaps, no overlaps, nothing after the last one. This module writes tensors in the
//! order of [`SafeTensors::tensors`] and reads them back in the order of their data, so a
//! round trip gives back the same value, bit for bit (NaN payloads included).
//!
//! The reader trusts nothing: every length and offset is checked against the file before
//! use, the header against a 100 MB cap, and no buffer is made larger than the part of
//! the file it holds. The header is parsed straight into typed entries, so its memory
//! is a small multiple of its length, with shapes capped at [`MAX_RANK`] dimensions.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use byteorder::{ByteOrder, LittleEndian};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The largest header accepted, in bytes: the cap of the reference implementation.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The header key that holds the string metadata instead of a tensor.
pub const METADATA_KEY: &str = "__metadata__";

/// The most dimensions a tensor may have. Real tensors have a handful; the cap keeps a
/// header like `"shape": [1, 1, 1, ...]` from costing 8 bytes of memory per 2 bytes of
/// file.
pub const MAX_RANK: usize = 64;

/// A tensor's elements, in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// dtype `"F32"`.
    F32(Vec<f32>),
    /// dtype `"F64"`.
    F64(Vec<f64>),
}

impl TensorData {
    /// The safetensors dtype name: `"F32"` or `"F64"`.
    #[must_use]
    pub fn dtype(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "F32",
            TensorData::F64(_) => "F64",
        }
    }

    /// The number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per element: 4 or 8.
    #[must_use]
    pub fn element_size(&self) -> usize {
        match self {
            TensorData::F32(_) => 4,
            TensorData::F64(_) => 8,
        }
    }

    /// Appends the elements to `out` as little-endian bytes.
    fn write_le(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.len() * self.element_size(), 0);
        match self {
            TensorData::F32(v) => LittleEndian::write_f32_into(v, &mut out[start..]),
            TensorData::F64(v) => LittleEndian::write_f64_into(v, &mut out[start..]),
        }
    }
}

/// One tensor of a checkpoint: its name, shape and elements.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// The name, e.g. `"down.0.conv1.weight"`.
    pub name: String,
    /// The shape; `[]` is a scalar with one element.
    pub shape: Vec<usize>,
    /// The elements; there must be as many as the product of `shape`.
    pub data: TensorData,
}

/// A safetensors file in memory: tensors and string metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SafeTensors {
    /// The tensors, in file order.
    pub tensors: Vec<NamedTensor>,
    /// Free-form string pairs, stored under `"__metadata__"`.
    pub metadata: BTreeMap<String, String>,
}

/// One tensor's header entry, as in the JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorInfo {
    dtype: String,
    #[serde(deserialize_with = "deserialize_shape")]
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// A tensor's entry after checking it against the file, with its data's byte range.
struct Located {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    begin: u64,
    end: u64,
}

impl SafeTensors {
    /// The tensor called `name`, if there is one.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Serialises to the safetensors format: header length, header padded with spaces
    /// to a multiple of 8 bytes, then the tensors' data in the order of `self.tensors`.
    /// The header is compact JSON with `"__metadata__"` first, the layout Python's
    /// `safetensors` writes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTensor`] if a tensor's data does not have the product of its
    /// shape elements, its shape has more than [`MAX_RANK`] dimensions, two tensors share
    /// a name, or a tensor is named `"__metadata__"`.
    ///
    /// # Example
    ///
    /// ```
    /// use nn::safetensors::{NamedTensor, SafeTensors, TensorData};
    ///
    /// let mut file = SafeTensors::default();
    /// file.tensors.push(NamedTensor {
    ///     name: "w".into(),
    ///     shape: vec![2],
    ///     data: TensorData::F32(vec![1.0, -2.0]),
    /// });
    /// let bytes = file.to_bytes()?;
    /// assert_eq!(SafeTensors::from_bytes(&bytes, "in memory")?, file);
    /// # Ok::<(), nn::Error>(())
    /// ```
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut names = HashSet::new();
        let mut header = String::from("{");
        if !self.metadata.is_empty() {
            header.push_str(&json_string(METADATA_KEY));
            header.push_str(":{");
            for (i, (key, value)) in self.metadata.iter().enumerate() {
                let comma = if i == 0 { "" } else { "," };
                header.push_str(&format!("{comma}{}:{}", json_string(key), json_string(value)));
            }
            header.push('}');
        }
        let mut offset = 0usize;
        for (i, tensor) in self.tensors.iter().enumerate() {
            let invalid = |reason: String| Error::InvalidTensor { name: tensor.name.clone(), reason };
            if tensor.name == METADATA_KEY {
                return Err(invalid(format!("the name {METADATA_KEY:?} is reserved")));
            }
            if !names.insert(tensor.name.as_str()) {
                return Err(invalid("two tensors have this name".into()));
            }
            if tensor.shape.len() > MAX_RANK {
                return Err(invalid(format!("{} dimensions, more than the {MAX_RANK} a file may hold", tensor.shape.len())));
            }
            let numel = numel(&tensor.shape);
            if numel != Some(tensor.data.len()) {
                return Err(invalid(format!(
                    "shape {:?} needs {} elements but the data has {}",
                    tensor.shape,
                    numel.map_or("more than usize::MAX".into(), |n| n.to_string()),
                    tensor.data.len()
                )));
            }
            let end = offset + tensor.data.len() * tensor.data.element_size();
            let comma = if i == 0 && self.metadata.is_empty() { "" } else { "," };
            header.push_str(&format!(
                "{comma}{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
                json_string(&tensor.name),
                tensor.data.dtype(),
                tensor.shape.iter().map(usize::to_string).collect::<Vec<_>>().join(","),
            ));
            offset = end;
        }
        header.push('}');
        // Pad with spaces, as the reference implementation does, so that the data starts
        // at a multiple of 8 bytes and an F64 tensor written first is aligned.
        let padded_len = header.len().next_multiple_of(8);
        header.push_str(&" ".repeat(padded_len - header.len()));

        let mut bytes = Vec::with_capacity(8 + header.len() + offset);
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for tensor in &self.tensors {
            tensor.data.write_le(&mut bytes);
        }
        Ok(bytes)
    }

    /// Parses a safetensors file held in memory. `source` names it in error messages.
    ///
    /// Tensors come back in the order of their data in the file. The header may hold
    /// only F32 and F64 tensors.
    ///
    /// # Errors
    ///
    /// [`Error::Format`] naming `source`, and the tensor and byte offset where known, if:
    /// the file is shorter than 8 bytes; the header length runs past the file or the
    /// 100 MB cap; the header is not UTF-8, not JSON, or not an object of tensor entries;
    /// a name appears twice; an entry has an unknown dtype or field, more than
    /// [`MAX_RANK`] dimensions, a shape whose element count overflows, `data_offsets` that do not span dtype size * element count bytes or
    /// run past the file; the tensors overlap or leave gaps; bytes follow the last
    /// tensor; `"__metadata__"` is not an object of strings.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self> {
        let error = |tensor: Option<&str>, offset: Option<u64>, reason: String| Error::Format {
            file: source.to_owned(),
            tensor: tensor.map(str::to_owned),
            offset,
            reason,
        };
        let file_len = bytes.len() as u64;

        // Part 1: the header length.
        let Some(len_bytes) = bytes.get(..8) else {
            return Err(error(None, Some(0), format!("the file is {file_len} bytes, too short for the 8-byte header length")));
        };
        let header_len = LittleEndian::read_u64(len_bytes);
        if header_len > MAX_HEADER_LEN {
            return Err(error(None, Some(0), format!("header length {header_len} exceeds the cap of {MAX_HEADER_LEN} bytes")));
        }
        if header_len > file_len - 8 {
            return Err(error(
                None,
                Some(0),
                format!(
                    "header length {header_len} runs past the end of the file \
                     ({file_len} bytes, so at most {} after the length)",
                    file_len - 8
                ),
            ));
        }
        // Both fit in usize: they are at most the slice's length.
        let data_start = 8 + header_len as usize;
        let data = &bytes[data_start..];
        let data_len = data.len() as u64;

        // Part 2: the header.
        let header = std::str::from_utf8(&bytes[8..data_start])
            .map_err(|e| error(None, Some(8 + e.valid_up_to() as u64), "the header is not valid UTF-8".into()))?;
        // `entry` names the entry being parsed, so that an error inside it names the tensor.
        let mut entry = None;
        let mut json = serde_json::Deserializer::from_str(header);
        let entries =
            HeaderSeed { entry: &mut entry }.deserialize(&mut json).and_then(|entries| json.end().map(|()| entries)).map_err(|e| {
                let offset = Some(8 + json_error_position(header, &e));
                let reason = match (e.classify(), &entry) {
                    (serde_json::error::Category::Data, Some(name)) if name == METADATA_KEY => {
                        format!("must map strings to strings: {e}")
                    }
                    (serde_json::error::Category::Data, Some(_)) => {
                        format!("bad header entry: {e}")
                    }
                    (serde_json::error::Category::Data, None) => {
                        format!("the header is not a JSON object of tensor entries: {e}")
                    }
                    _ => format!("the header is not valid JSON: {e}"),
                };
                error(entry.as_deref(), offset, reason)
            })?;

        let mut names = HashSet::new();
        if let Some((name, _)) = entries.iter().find(|(name, _)| !names.insert(name.as_str())) {
            return Err(error(Some(name), None, "the name appears twice in the header".into()));
        }
        let mut metadata = BTreeMap::new();
        let mut located = Vec::with_capacity(entries.len());
        for (name, entry) in entries {
            let info = match entry {
                Entry::Metadata(map) => {
                    metadata = map;
                    continue;
                }
                Entry::Tensor(info) => info,
            };
            let (dtype, element_size) = match info.dtype.as_str() {
                "F32" => ("F32", 4),
                "F64" => ("F64", 8),
                other => return Err(error(Some(&name), None, format!("unsupported dtype {other:?}: this reader knows F32 and F64"))),
            };
            let nbytes = numel(&info.shape)
                .and_then(|n| n.checked_mul(element_size))
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| error(Some(&name), None, format!("shape {:?} has too many elements", info.shape)))?;
            let [begin, end] = info.data_offsets;
            if begin > end || end - begin != nbytes {
                return Err(error(
                    Some(&name),
                    None,
                    format!(
                        "data_offsets [{begin}, {end}] do not span the {nbytes} bytes that \
                         {dtype} shape {:?} needs",
                        info.shape
                    ),
                ));
            }
            if end > data_len {
                return Err(error(
                    Some(&name),
                    None,
                    format!(
                        "data_offsets [{begin}, {end}] run past the end of the data, which is \
                         {data_len} bytes (file bytes {data_start}..{file_len})"
                    ),
                ));
            }
            located.push(Located { name, dtype, shape: info.shape, begin, end });
        }

        // Part 3: the data. The tensors must tile it exactly, in order of their offsets;
        // the stable sort keeps header order among empty tensors at the same offset.
        located.sort_by_key(|t| (t.begin, t.end));
        let mut cursor = 0u64;
        let mut previous: Option<&str> = None;
        for t in &located {
            let at = Some(data_start as u64 + t.begin);
            if t.begin < cursor {
                return Err(error(
                    Some(&t.name),
                    at,
                    format!("data [{}, {}) overlaps tensor {:?}, which ends at {cursor}", t.begin, t.end, previous.unwrap_or_default()),
                ));
            }
            if t.begin > cursor {
                return Err(error(
                    Some(&t.name),
                    Some(data_start as u64 + cursor),
                    format!("data bytes [{cursor}, {}) before this tensor belong to no tensor", t.begin),
                ));
            }
            cursor = t.end;
            previous = Some(&t.name);
        }
        if cursor != data_len {
            return Err(error(
                None,
                Some(data_start as u64 + cursor),
                format!("trailing bytes: the tensors end at file byte {}, the file at {file_len}", data_start as u64 + cursor),
            ));
        }

        // Every range is now inside `data` and disjoint, so these buffers add up to at
        // most the file's size.
        let tensors = located
            .into_iter()
            .map(|t| {
                let raw = &data[t.begin as usize..t.end as usize];
                let data = if t.dtype == "F32" {
                    let mut values = vec![0f32; raw.len() / 4];
                    LittleEndian::read_f32_into(raw, &mut values);
                    TensorData::F32(values)
                } else {
                    let mut values = vec![0f64; raw.len() / 8];
                    LittleEndian::read_f64_into(raw, &mut values);
                    TensorData::F64(values)
                };
                NamedTensor { name: t.name, shape: t.shape, data }
            })
            .collect();
        Ok(SafeTensors { tensors, metadata })
    }

    /// Writes the file atomically: to a temporary file in the same directory, synced to
    /// disk, then renamed over `path`. A crash leaves the old checkpoint or the new one,
    /// never half of one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTensor`] as for [`SafeTensors::to_bytes`]; [`Error::Io`] if the
    /// temporary file cannot be written or renamed (it is then removed).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        static SAVES: AtomicU64 = AtomicU64::new(0);
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        let io_error = |path: &Path, source| Error::Io { path: path.to_owned(), source };
        let file_name =
            path.file_name().ok_or_else(|| io_error(path, std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name")))?;
        let dir = parent_dir(path);
        // Beside the destination, so that the rename stays on one file system. Unique
        // per process and per call, so concurrent saves do not share a temp file.
        let temp =
            dir.join(format!(".{}.{}-{}.tmp", file_name.to_string_lossy(), std::process::id(), SAVES.fetch_add(1, Ordering::Relaxed)));
        let written = File::create(&temp).and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| fs::rename(&temp, path)) {
            // Best effort: the temp file may not exist if creating it failed.
            let _ = fs::remove_file(&temp);
            return Err(io_error(path, e));
        }
        // Make the rename itself durable (directories can be synced on Unix only).
        #[cfg(unix)]
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(dir, e))?;
        Ok(())
    }

    /// Reads a safetensors file. Memory use is the file's size plus its tensors.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be read; [`Error::Format`] naming the file as
    /// for [`SafeTensors::from_bytes`].
    ///
    /// # Example
    ///
    /// ```
    /// use nn::safetensors::{NamedTensor, SafeTensors, TensorData};
    ///
    /// let mut checkpoint = SafeTensors::default();
    /// checkpoint.metadata.insert("step".into(), "1000".into());
    /// checkpoint.tensors.push(NamedTensor {
    ///     name: "beta".into(),
    ///     shape: vec![],
    ///     data: TensorData::F64(vec![0.02]),
    /// });
    /// let path = std::env::temp_dir().join(format!("doc-{}.safetensors", std::process::id()));
    /// checkpoint.save(&path)?;
    /// assert_eq!(SafeTensors::load(&path)?, checkpoint);
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), nn::Error>(())
    /// ```
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }
}

/// The folder `path` is in: `.` for a bare file name, whose parent is the empty path
/// (which `File::open` cannot open to sync).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The number of elements of `shape`, or `None` if it overflows `usize`.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// `s` as a JSON string literal, quoted and escaped.
fn json_string(s: &str) -> String {
    // Serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

/// The byte offset in `text` of a serde_json error's line and column (both 1-based).
fn json_error_position(text: &str, e: &serde_json::Error) -> u64 {
    let line_start: usize = text.split('\n').take(e.line().saturating_sub(1)).map(|line| line.len() + 1).sum();
    (line_start + e.column().saturating_sub(1)) as u64
}

/// One top-level entry of the header.
enum Entry {
    /// The `"__metadata__"` entry.
    Metadata(BTreeMap<String, String>),
    /// A tensor's entry.
    Tensor(TensorInfo),
}

/// Parses the header's top-level object into its entries in file order, duplicates
/// kept, so that a repeated name can be reported rather than silently dropped as a map
/// would. Each entry is parsed straight into its type, with no `serde_json::Value`
/// tree in between (which would cost ~16 bytes of memory per byte of `[1,1,...]`).
/// `entry` holds the name of the entry being parsed, so an error can name it.
struct HeaderSeed<'a> {
    entry: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = Vec<(String, Entry)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = Vec<(String, Entry)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of tensor entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            *self.entry = Some(name.clone());
            let entry = if name == METADATA_KEY { Entry::Metadata(map.next_value()?) } else { Entry::Tensor(map.next_value()?) };
            *self.entry = None;
            entries.push((name, entry));
        }
        Ok(entries)
    }
}

/// Parses a shape, refusing more than [`MAX_RANK`] dimensions as soon as it sees them.
fn deserialize_shape<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<usize>, D::Error> {
    struct ShapeVisitor;

    impl<'de> Visitor<'de> for ShapeVisitor {
        type Value = Vec<usize>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of at most {MAX_RANK} non-negative integers")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<usize>, A::Error> {
            let mut shape = Vec::new();
            while let Some(dim) = seq.next_element::<usize>()? {
                if shape.len() == MAX_RANK {
                    return Err(de::Error::custom(format!("more than {MAX_RANK} dimensions")));
                }
                shape.push(dim);
            }
            Ok(shape)
        }
    }

    deserializer.deserialize_seq(ShapeVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, shape: &[usize], data: TensorData) -> NamedTensor {
        NamedTensor { name: name.into(), shape: shape.to_vec(), data }
    }

    /// A file from the spec: the header padded to 8 bytes, its length, then `data`.
    fn file_with_header(json: &str, data: &[u8]) -> Vec<u8> {
        let mut header = json.to_owned();
        let padded_len = header.len().next_multiple_of(8);
        header.push_str(&" ".repeat(padded_len - header.len()));
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    /// Bit patterns, so that NaN payloads and -0.0 compare exactly.
    fn bits(file: &SafeTensors) -> Vec<(String, Vec<usize>, Vec<u64>)> {
        file.tensors
            .iter()
            .map(|t| {
                let bits = match &t.data {
                    TensorData::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
                    TensorData::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
                };
                (t.name.clone(), t.shape.clone(), bits)
            })
            .collect()
    }

    fn awkward_values() -> SafeTensors {
        let f32_specials = vec![
            -0.0,
            f32::from_bits(0x7fc0_1234), // quiet NaN with a payload
            f32::from_bits(0x7f80_0001), // signalling NaN
            f32::from_bits(0xffc0_0000), // negative NaN
            f32::INFINITY,
            f32::MIN_POSITIVE / 2.0, // subnormal
            f32::MAX,
            1.5,
        ];
        let f64_specials = vec![-0.0, f64::from_bits(0x7ff8_dead_beef_0001), f64::NEG_INFINITY, 1e-310];
        let mut file = SafeTensors::default();
        file.tensors.push(tensor("b.specials", &[2, 4], TensorData::F32(f32_specials)));
        file.tensors.push(tensor("a.double", &[4], TensorData::F64(f64_specials)));
        file.tensors.push(tensor("empty", &[0, 3], TensorData::F32(vec![])));
        file.tensors.push(tensor("scalar", &[], TensorData::F64(vec![std::f64::consts::PI])));
        file.tensors.push(tensor("empty too", &[5, 0], TensorData::F64(vec![])));
        file.tensors.push(tensor("ünïcode \"quoted\"", &[1, 1, 1], TensorData::F32(vec![7.0])));
        file.metadata.insert("step".into(), "1000".into());
        file.metadata.insert("note".into(), "line\nbreak, \"quotes\" and é".into());
        file
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let file = awkward_values();
        let bytes = file.to_bytes().unwrap();
        let back = SafeTensors::from_bytes(&bytes, "mem").unwrap();
        assert_eq!(bits(&back), bits(&file));
        assert_eq!(back.metadata, file.metadata);
        // Writing what was read gives the same bytes.
        assert_eq!(back.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn tensor_data_reports_its_dtype_length_and_element_size() {
        let cases = [(TensorData::F32(vec![1.0, 2.0, 3.0]), "F32", 3, 4), (TensorData::F64(vec![]), "F64", 0, 8)];
        for (data, dtype, len, size) in cases {
            assert_eq!((data.dtype(), data.len(), data.is_empty(), data.element_size()), (dtype, len, len == 0, size));
        }
    }

    #[test]
    fn the_temp_file_goes_into_the_destinations_folder() {
        assert_eq!(parent_dir(Path::new("model.safetensors")), Path::new("."));
        assert_eq!(parent_dir(Path::new("runs/quick/model.safetensors")), Path::new("runs/quick"));
        assert_eq!(parent_dir(Path::new("/model.safetensors")), Path::new("/"));
    }

    #[test]
    fn empty_file_round_trips() {
        let bytes = SafeTensors::default().to_bytes().unwrap();
        assert_eq!(bytes, file_with_header("{}", &[]));
        assert_eq!(SafeTensors::from_bytes(&bytes, "mem").unwrap(), SafeTensors::default());
    }

    #[test]
    fn header_is_padded_to_eight_bytes() {
        let bytes = awkward_values().to_bytes().unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(header_len % 8, 0);
        let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
        assert!(header.trim_end_matches(' ').ends_with('}'), "padding is spaces: {header:?}");
    }

    /// The bytes of a two-tensor file written out from the spec, byte by byte.
    fn spec_bytes() -> Vec<u8> {
        let json = r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"s":{"dtype":"F64","shape":[],"data_offsets":[8,16]}}"#;
        let data = [
            0x00, 0x00, 0x80, 0x3f, // 1.0f32 little-endian
            0x00, 0x00, 0x00, 0xc0, // -2.0f32
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x40, // 2.5f64
        ];
        file_with_header(json, &data)
    }

    #[test]
    fn file_written_from_the_spec_parses() {
        let file = SafeTensors::from_bytes(&spec_bytes(), "spec.safetensors").unwrap();
        assert_eq!(file.get("w").unwrap().data, TensorData::F32(vec![1.0, -2.0]));
        assert_eq!(file.get("w").unwrap().shape, [2]);
        assert_eq!(file.get("s").unwrap().data, TensorData::F64(vec![2.5]));
        assert!(file.get("s").unwrap().shape.is_empty());
        assert_eq!(file.metadata["format"], "pt");
        // And the writer produces exactly those bytes from the same content.
        assert_eq!(file.to_bytes().unwrap(), spec_bytes());
    }

    #[test]
    fn header_whitespace_and_key_order_do_not_matter() {
        let json = "{\n  \"s\": {\"shape\": [], \"data_offsets\": [4, 8], \"dtype\": \"F32\"},\n  \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}\n}";
        let data = [1f32.to_le_bytes(), 2f32.to_le_bytes()].concat();
        let file = SafeTensors::from_bytes(&file_with_header(json, &data), "mem").unwrap();
        // Returned in data order.
        assert_eq!(file.tensors[0].name, "w");
        assert_eq!(file.get("s").unwrap().data, TensorData::F32(vec![2.0]));
    }

    #[test]
    fn save_replaces_atomically_and_load_reads_back() {
        let dir = std::env::temp_dir().join(format!("nn-safetensors-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        let file = awkward_values();
        SafeTensors::default().save(&path).unwrap();
        file.save(&path).unwrap(); // replaces the first one
        assert_eq!(bits(&SafeTensors::load(&path).unwrap()), bits(&file));
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, ["model.safetensors"], "no temp file left behind");
        fs::remove_dir_all(&dir).unwrap();

        let err = file.save(dir.join("missing-dir/x.safetensors")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("missing-dir"), "{err}");
        let err = SafeTensors::load(dir.join("none.safetensors")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("none.safetensors"));
    }

    #[test]
    fn unwritable_tensors_are_refused() {
        let bad = |tensors: Vec<NamedTensor>| SafeTensors { tensors, metadata: BTreeMap::new() }.to_bytes().unwrap_err().to_string();
        let err = bad(vec![tensor("w", &[2, 3], TensorData::F32(vec![0.0; 5]))]);
        assert!(err.contains("\"w\"") && err.contains("[2, 3] needs 6") && err.contains("has 5"), "{err}");
        let err = bad(vec![tensor("w", &[usize::MAX, 2], TensorData::F32(vec![]))]);
        assert!(err.contains("more than usize::MAX"), "{err}");
        let err = bad(vec![tensor("w", &[], TensorData::F32(vec![1.0])); 2]);
        assert!(err.contains("two tensors"), "{err}");
        let err = bad(vec![tensor("w", &[1; MAX_RANK + 1], TensorData::F32(vec![1.0]))]);
        assert!(err.contains("65 dimensions"), "{err}");
        // MAX_RANK itself is fine, both ways.
        let deep = SafeTensors { tensors: vec![tensor("w", &[1; MAX_RANK], TensorData::F32(vec![1.0]))], metadata: BTreeMap::new() };
        assert_eq!(SafeTensors::from_bytes(&deep.to_bytes().unwrap(), "mem").unwrap(), deep);
        let err = bad(vec![tensor(METADATA_KEY, &[], TensorData::F32(vec![1.0]))]);
        assert!(err.contains("reserved"), "{err}");
    }

    /// Parses `bytes` expecting a format error whose message contains every piece of
    /// `expected` (the file name is always checked).
    fn assert_format_error(bytes: &[u8], expected: &[&str]) {
        let err = SafeTensors::from_bytes(bytes, "bad.safetensors").unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Format { .. }), "not a format error: {message}");
        for piece in ["bad.safetensors"].iter().chain(expected) {
            assert!(message.contains(piece), "{message:?} does not contain {piece:?}");
        }
    }

    fn f32_entry(name: &str, shape: &str, begin: u64, end: u64) -> String {
        format!(r#""{name}":{{"dtype":"F32","shape":{shape},"data_offsets":[{begin},{end}]}}"#)
    }

    #[test]
    fn short_file_and_bad_header_lengths_are_refused() {
        assert_format_error(&[], &["offset 0", "0 bytes, too short"]);
        assert_format_error(&[8, 0, 0, 0, 0, 0, 0], &["offset 0", "7 bytes, too short"]);
        let mut bytes = spec_bytes();
        bytes[..8].copy_from_slice(&1000u64.to_le_bytes());
        assert_format_error(&bytes, &["offset 0", "header length 1000 runs past the end"]);
        bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_format_error(&bytes, &["offset 0", "exceeds the cap"]);
        // The cap itself is allowed (this file is too short for it), one more is not.
        bytes[..8].copy_from_slice(&MAX_HEADER_LEN.to_le_bytes());
        assert_format_error(&bytes, &["offset 0", "runs past the end"]);
        bytes[..8].copy_from_slice(&(MAX_HEADER_LEN + 1).to_le_bytes());
        assert_format_error(&bytes, &["offset 0", "exceeds the cap"]);
        // One byte past the end; the header may end exactly at the end (no data).
        let past = bytes.len() as u64 - 8 + 1;
        bytes[..8].copy_from_slice(&past.to_le_bytes());
        assert_format_error(&bytes, &["offset 0", &format!("header length {past} runs past the end")]);
    }

    #[test]
    fn bad_header_text_is_refused() {
        let mut bytes = file_with_header("{}", &[]);
        bytes[9] = 0xff;
        assert_format_error(&bytes, &["offset 9", "not valid UTF-8"]);
        assert_format_error(&file_with_header("{\"w\": ", &[]), &["offset", "not valid JSON"]);
        assert_format_error(&file_with_header("{} x", &[]), &["offset 11", "not valid JSON"]);
        assert_format_error(&file_with_header("[1, 2]", &[]), &["not a JSON object", "expected a JSON object of tensor entries"]);
        // An error past the first line: the offset counts the earlier lines' bytes and
        // their newlines, and points at the byte where the parser stopped (the x).
        let header = "{\n  \"w\": x}";
        let at = 8 + header.find('x').unwrap();
        assert_format_error(&file_with_header(header, &[]), &[&format!("offset {at}"), "not valid JSON"]);
        assert_format_error(&file_with_header("", &[]), &["offset 8", "not valid JSON"]);
        // Deep nesting is refused without recursing into it.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_format_error(&file_with_header(&deep, &[]), &["not a JSON object"]);
        let deep = format!("{{\"__metadata__\":{}}}", "{\"a\":".repeat(100_000));
        assert_format_error(&file_with_header(&deep, &[]), &["tensor \"__metadata__\""]);
    }

    #[test]
    fn bad_entries_are_refused() {
        let with = |json: String, data: &[u8]| file_with_header(&format!("{{{json}}}"), data);
        let data = [0u8; 8];
        assert_format_error(
            &with(r#""w":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}"#.into(), &data),
            &["tensor \"w\"", "unsupported dtype \"BF16\""],
        );
        assert_format_error(&with(r#""w":{"dtype":"F32","shape":[2]}"#.into(), &data), &["tensor \"w\"", "missing field `data_offsets`"]);
        assert_format_error(
            &with(r#""w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}"#.into(), &data),
            &["tensor \"w\"", "bad header entry"],
        );
        assert_format_error(
            &with(f32_entry("w", "\"2\"", 0, 8), &data),
            &["tensor \"w\"", "expected an array of at most 64 non-negative integers"],
        );
        let huge = format!("[{}, {}, 4]", u64::MAX, u64::MAX);
        assert_format_error(&with(f32_entry("w", &huge, 0, 8), &data), &["tensor \"w\"", "too many elements"]);
        assert_format_error(&with(f32_entry("w", "[3]", 0, 8), &data), &["tensor \"w\"", "[0, 8] do not span the 12 bytes"]);
        assert_format_error(&with(f32_entry("w", "[0]", 8, 0), &data), &["tensor \"w\"", "do not span"]);
        assert_format_error(
            &with(f32_entry("w", "[4]", 0, 16), &data),
            &["tensor \"w\"", "run past the end of the data, which is 8 bytes"],
        );
        let rank_65 = format!("[{}1]", "1,".repeat(64));
        assert_format_error(&with(f32_entry("w", &rank_65, 0, 4), &data[..4]), &["tensor \"w\"", "more than 64 dimensions"]);
        assert_format_error(
            &with(r#""w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}"#.into(), &data[..4]),
            &["tensor \"w\"", "unknown field `extra`"],
        );
        let twice = format!("{},{}", f32_entry("w", "[1]", 0, 4), f32_entry("w", "[1]", 4, 8));
        assert_format_error(&with(twice, &data), &["tensor \"w\"", "appears twice"]);
        assert_format_error(&with(r#""__metadata__":{"step":1000}"#.into(), &[]), &["tensor \"__metadata__\"", "strings to strings"]);
    }

    #[test]
    fn overlaps_gaps_and_trailing_bytes_are_refused() {
        let with = |json: String, data: &[u8]| file_with_header(&format!("{{{json}}}"), data);
        // Two entries make a 108-byte header, padded to 112, so the data starts at file
        // byte 8 + 112 = 120 and data offset 4 is file byte 124.
        let overlap = format!("{},{}", f32_entry("a", "[2]", 0, 8), f32_entry("b", "[2]", 4, 12));
        assert_eq!(with(overlap.clone(), &[]).len(), 120);
        assert_format_error(&with(overlap, &[0; 12]), &["tensor \"b\"", "offset 124", "overlaps tensor \"a\""]);
        let gap = format!("{},{}", f32_entry("a", "[1]", 0, 4), f32_entry("b", "[1]", 8, 12));
        assert_format_error(&with(gap, &[0; 12]), &["tensor \"b\"", "offset 124", "[4, 8)"]);
        let late_start = f32_entry("a", "[1]", 4, 8);
        assert_format_error(&with(late_start, &[0; 8]), &["tensor \"a\"", "[0, 4)"]);
        // One entry makes a 54-byte header, padded to 56: the data starts at byte 64, the
        // tensor ends at 68, and three bytes follow.
        let one = f32_entry("a", "[1]", 0, 4);
        assert_eq!(with(one.clone(), &[]).len(), 64);
        assert_format_error(&with(one, &[0; 7]), &["offset 68", "trailing bytes"]);
    }
}
