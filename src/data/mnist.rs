//! MNIST: 28x28 grey-scale digits and their labels, and batches of them for training.
//!
//! Shapes (row-major):
//!
//! ```text
//! N = number of examples in the split (60000 train, 10000 test)
//! B = batch size
//! images  u8  (N, 28, 28)    0 = background, 255 = ink
//! labels  u8  (N)            0..=9
//! batch   f32 (B, 1, 28, 28) pixels mapped to [-1, 1] by pixel_to_float
//! ```
//!
//! The files are the four IDX files in `data/mnist/` of the repository (see its
//! README for their source, licence and checksums), read by [`crate::data::idx`].

use std::fmt;
use std::path::{Path, PathBuf};

use crate::data::idx::IdxArray;
use crate::error::{Error, Result};

/// Rows of an MNIST image.
pub const ROWS: usize = 28;
/// Columns of an MNIST image.
pub const COLS: usize = 28;
/// Pixels per image, `ROWS * COLS`.
pub const PIXELS: usize = ROWS * COLS;
/// Number of classes: the digits 0 to 9.
pub const CLASSES: usize = 10;

/// Which half of MNIST to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The 60,000 training examples.
    Train,
    /// The 10,000 test examples.
    Test,
}

impl Split {
    /// The file name of this split's images.
    #[must_use]
    pub fn images_file(self) -> &'static str {
        match self {
            Split::Train => "train-images-idx3-ubyte.gz",
            Split::Test => "t10k-images-idx3-ubyte.gz",
        }
    }

    /// The file name of this split's labels.
    #[must_use]
    pub fn labels_file(self) -> &'static str {
        match self {
            Split::Train => "train-labels-idx1-ubyte.gz",
            Split::Test => "t10k-labels-idx1-ubyte.gz",
        }
    }
}

/// Maps a pixel 0..=255 to the model's range [-1, 1]: `p / 127.5 - 1`, so 0 (background)
/// becomes -1 and 255 (ink) becomes 1.
///
/// DDPM (Ho et al., 2020, section 4) scales image data linearly to [-1, 1] so that the
/// data and the standard normal prior x_T ~ N(0, I) live on comparable scales, and the
/// reverse process starts from, and ends near, the same range.
#[must_use]
pub fn pixel_to_float(p: u8) -> f32 {
    f32::from(p) / 127.5 - 1.0
}

/// The inverse of [`pixel_to_float`] for model outputs: clamps `x` to [-1, 1] and maps it
/// to the nearest pixel value, `round((x + 1) * 127.5)`. NaN maps to 0.
#[must_use]
pub fn float_to_pixel(x: f32) -> u8 {
    // `as` saturates and sends NaN to 0, so no input panics.
    ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// The MNIST loader.
#[derive(Clone, Copy, Debug)]
pub struct Mnist;

impl Mnist {
    /// The `data/mnist` directory of this repository, where the four files are committed.
    /// It is the source tree's path at compile time.
    #[must_use]
    pub fn default_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join("mnist")
    }

    /// Loads one split from `dir`, which holds the four gzip IDX files.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a file cannot be read. [`Error::Format`], naming the file and the
    /// byte offset, if a file is not a well-formed IDX file (see
    /// [`IdxArray::from_reader`]), the images are not (N, 28, 28) with N > 0, the labels are not (N)
    /// with the same N, or a label is above 9.
    ///
    /// # Example
    ///
    /// ```
    /// use course::data::mnist::{Mnist, Split};
    ///
    /// let test = Mnist::load(Mnist::default_dir(), Split::Test)?;
    /// assert_eq!(test.len(), 10_000);
    /// assert_eq!(test.label(0), Some(7));
    /// # Ok::<(), course::error::Error>(())
    /// ```
    pub fn load(dir: impl AsRef<Path>, split: Split) -> Result<MnistSplit> {
        let dir = dir.as_ref();
        let images_path = dir.join(split.images_file());
        let labels_path = dir.join(split.labels_file());
        let images = IdxArray::read(&images_path)?;
        let labels = IdxArray::read(&labels_path)?;

        // The dimensions start at byte 4, after the magic.
        let images_name = format!("{} (decompressed)", images_path.display());
        let labels_name = format!("{} (decompressed)", labels_path.display());
        let n = match *images.dims() {
            // No images would leave nothing to train on, and means of nothing to print.
            [0, ROWS, COLS] => return Err(Error::format(&images_name, 4, "holds no images".to_string())),
            [n, ROWS, COLS] => n,
            ref dims => {
                return Err(Error::format(&images_name, 4, format!("MNIST images must have dimensions (N, 28, 28), found {dims:?}")))
            }
        };
        match *labels.dims() {
            [m] if m == n => {}
            [m] => return Err(Error::format(&labels_name, 4, format!("{m} labels, but {} holds {n} images", images_path.display()))),
            ref dims => return Err(Error::format(&labels_name, 4, format!("MNIST labels must have dimensions (N), found {dims:?}"))),
        }
        if let Some(i) = labels.data().iter().position(|&label| usize::from(label) >= CLASSES) {
            return Err(Error::format(
                &labels_name,
                (labels.header_len() + i) as u64,
                format!("label {} of example {i} is not a digit 0-9", labels.data()[i]),
            ));
        }
        Ok(MnistSplit { split, images: images.into_data(), labels: labels.into_data() })
    }
}

/// One split of MNIST in memory: `images` (N, 28, 28) and `labels` (N), both u8.
///
/// Invariant: `images.len() == labels.len() * PIXELS` and every label is at most 9.
#[derive(Clone, PartialEq, Eq)]
pub struct MnistSplit {
    split: Split,
    images: Vec<u8>,
    labels: Vec<u8>,
}

impl MnistSplit {
    /// Which split this is.
    #[must_use]
    pub fn split(&self) -> Split {
        self.split
    }

    /// N, the number of examples.
    #[must_use]
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split has no examples.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// All images, (N, 28, 28) row-major.
    #[must_use]
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels, (N).
    #[must_use]
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Image `i`, (28, 28), or `None` past the end.
    #[must_use]
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        self.images.get(i.checked_mul(PIXELS)?..(i.checked_add(1)?).checked_mul(PIXELS)?)
    }

    /// Label `i`, or `None` past the end.
    #[must_use]
    pub fn label(&self, i: usize) -> Option<u8> {
        self.labels.get(i).copied()
    }

    /// Gathers the images at `indices` into one batch (B, 1, 28, 28) with
    /// B = `indices.len()`, each pixel mapped to [-1, 1] by [`pixel_to_float`].
    /// Indices may repeat.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`] if an index is not below [`MnistSplit::len`].
    pub fn gather_images(&self, indices: &[usize]) -> Result<Vec<f32>> {
        let mut batch = Vec::with_capacity(indices.len().saturating_mul(PIXELS));
        for &i in indices {
            let image = self.image(i).ok_or_else(|| self.out_of_range(i))?;
            batch.extend(image.iter().map(|&p| pixel_to_float(p)));
        }
        Ok(batch)
    }

    /// Gathers the labels at `indices`, (B).
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`] if an index is not below [`MnistSplit::len`].
    pub fn gather_labels(&self, indices: &[usize]) -> Result<Vec<u8>> {
        indices.iter().map(|&i| self.label(i).ok_or_else(|| self.out_of_range(i))).collect()
    }

    /// Walks `order` in batches of `batch_size` indices; the last batch is smaller if
    /// `batch_size` does not divide `order.len()`. Pass `0..N` shuffled for one epoch of
    /// SGD. All indices are checked here, so the iterator itself cannot fail.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `batch_size` is 0; [`Error::IndexOutOfRange`] if an
    /// index in `order` is not below [`MnistSplit::len`].
    ///
    /// # Example
    ///
    /// ```
    /// use course::data::mnist::{Mnist, Split};
    /// use rand::{seq::SliceRandom, SeedableRng};
    /// use rand_chacha::ChaCha8Rng;
    ///
    /// let test = Mnist::load(Mnist::default_dir(), Split::Test)?;
    /// let mut order: Vec<usize> = (0..test.len()).collect();
    /// order.shuffle(&mut ChaCha8Rng::seed_from_u64(0));
    /// for batch in test.batches(&order, 128)? {
    ///     assert_eq!(batch.images.len(), batch.len() * 28 * 28); // (B, 1, 28, 28)
    /// }
    /// # Ok::<(), course::error::Error>(())
    /// ```
    pub fn batches<'a>(&'a self, order: &'a [usize], batch_size: usize) -> Result<Batches<'a>> {
        if batch_size == 0 {
            return Err(Error::InvalidArgument { what: "batch size", reason: "must be at least 1".into() });
        }
        if let Some(&i) = order.iter().find(|&&i| i >= self.len()) {
            return Err(self.out_of_range(i));
        }
        Ok(Batches { split: self, chunks: order.chunks(batch_size) })
    }

    fn out_of_range(&self, index: usize) -> Error {
        Error::IndexOutOfRange { what: format!("MNIST {:?} split", self.split), index, len: self.len() }
    }
}

/// Shows the split and N, not the pixels.
impl fmt::Debug for MnistSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MnistSplit").field("split", &self.split).field("len", &self.len()).finish()
    }
}

/// One batch from [`MnistSplit::batches`].
#[derive(Clone, Debug, PartialEq)]
pub struct MnistBatch {
    /// The examples' indices into the split, (B).
    pub indices: Vec<usize>,
    /// The images, (B, 1, 28, 28), in [-1, 1].
    pub images: Vec<f32>,
    /// The labels, (B).
    pub labels: Vec<u8>,
}

impl MnistBatch {
    /// B, the number of examples in the batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the batch has no examples (never so for batches from [`Batches`]).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Iterator over the batches of an ordering of a split; see [`MnistSplit::batches`].
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    split: &'a MnistSplit,
    chunks: std::slice::Chunks<'a, usize>,
}

impl Iterator for Batches<'_> {
    type Item = MnistBatch;

    fn next(&mut self) -> Option<MnistBatch> {
        let indices = self.chunks.next()?;
        // `batches` checked every index, so these gathers cannot fail.
        let images = self.split.gather_images(indices).ok()?;
        let labels = self.split.gather_labels(indices).ok()?;
        Some(MnistBatch { indices: indices.to_vec(), images, labels })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for Batches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};
    use std::io::Read;

    /// The published MD5 checksums of the original uncompressed MNIST files.
    const CHECKSUMS: [(&str, &str); 4] = [
        ("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
        ("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
        ("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
        ("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
    ];

    #[test]
    fn committed_files_match_the_published_checksums() {
        for (file, expected) in CHECKSUMS {
            let gz = std::fs::File::open(Mnist::default_dir().join(file)).unwrap();
            let mut content = Vec::new();
            flate2::read::MultiGzDecoder::new(gz).read_to_end(&mut content).unwrap();
            let digest: String = Md5::digest(&content).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(digest, expected, "MD5 of the decompressed {file}");
        }
    }

    #[test]
    fn splits_have_the_published_sizes() {
        for (split, n) in [(Split::Train, 60_000), (Split::Test, 10_000)] {
            let data = Mnist::load(Mnist::default_dir(), split).unwrap();
            assert_eq!(data.len(), n);
            assert_eq!(data.images().len(), n * 28 * 28);
            assert_eq!(data.labels().len(), n);
            // Every digit appears, roughly a tenth of the time (the rarest, 5, is ~9%).
            for digit in 0..10u8 {
                let count = data.labels().iter().filter(|&&l| l == digit).count();
                assert!(count > n / 12 && count < n / 8, "digit {digit}: {count} of {n}");
            }
        }
    }

    #[test]
    fn first_training_example_is_a_five() {
        let train = Mnist::load(Mnist::default_dir(), Split::Train).unwrap();
        assert_eq!(train.label(0), Some(5));
        let image = train.image(0).unwrap();
        assert_eq!(image.len(), PIXELS);
        assert_eq!(image[0], 0, "the corner is background");
        assert_eq!(image.iter().copied().max(), Some(255), "some pixel is full ink");
        assert_eq!(train.image(60_000), None);
        assert_eq!(train.image(usize::MAX), None);
    }

    #[test]
    fn pixels_map_onto_minus_one_to_one_and_back() {
        assert_eq!(pixel_to_float(0), -1.0);
        assert_eq!(pixel_to_float(255), 1.0);
        assert!((pixel_to_float(128) - 0.5 / 127.5).abs() < 1e-7);
        for p in 0..=255u8 {
            assert_eq!(float_to_pixel(pixel_to_float(p)), p);
        }
        assert_eq!(float_to_pixel(-7.0), 0);
        assert_eq!(float_to_pixel(7.0), 255);
        assert_eq!(float_to_pixel(f32::NAN), 0);
    }

    #[test]
    fn batches_gather_the_right_examples() {
        let test = Mnist::load(Mnist::default_dir(), Split::Test).unwrap();
        let order = [3, 1, 4, 1, 5];
        let mut sized = test.batches(&order, 2).unwrap();
        assert_eq!(sized.len(), 3, "ExactSizeIterator: ceil(5 / 2) batches");
        sized.next();
        assert_eq!(sized.size_hint(), (2, Some(2)));
        let batches: Vec<MnistBatch> = test.batches(&order, 2).unwrap().collect();
        assert_eq!(batches.iter().map(MnistBatch::len).collect::<Vec<_>>(), [2, 2, 1]);
        let second = &batches[1];
        assert_eq!(second.indices, [4, 1]);
        assert_eq!(second.labels, [test.label(4).unwrap(), test.label(1).unwrap()]);
        // The second image of the batch starts at (1, 0, 0, 0) = 784 and is example 1.
        let expected: Vec<f32> = test.image(1).unwrap().iter().map(|&p| pixel_to_float(p)).collect();
        assert_eq!(&second.images[PIXELS..2 * PIXELS], &expected[..]);
        assert!(second.images.iter().all(|x| (-1.0..=1.0).contains(x)));
        assert!(!second.is_empty() && !test.is_empty());
        assert!(MnistBatch { indices: vec![], images: vec![], labels: vec![] }.is_empty());
        // Debug names the split and its size, not 7.8 million pixels.
        assert_eq!(format!("{test:?}"), "MnistSplit { split: Test, len: 10000 }");
    }

    #[test]
    fn bad_indices_and_batch_sizes_are_errors() {
        let test = Mnist::load(Mnist::default_dir(), Split::Test).unwrap();
        let err = test.gather_images(&[0, 10_000]).unwrap_err();
        assert!(matches!(err, Error::IndexOutOfRange { index: 10_000, len: 10_000, .. }));
        assert!(test.gather_labels(&[usize::MAX]).is_err());
        assert!(test.batches(&[0, 10_000], 4).is_err());
        assert!(test.batches(&[0, 1], 0).is_err());
    }

    /// Writes one split's two files into a fresh directory, as gzip IDX.
    fn write_split(name: &str, image_dims: &[u32], label_dims: &[u32], labels: &[u8]) -> PathBuf {
        use flate2::{write::GzEncoder, Compression};
        use std::io::Write;
        let idx = |dims: &[u32], data: &[u8]| {
            let mut bytes = vec![0, 0, 8, dims.len() as u8];
            dims.iter().for_each(|d| bytes.extend_from_slice(&d.to_be_bytes()));
            bytes.extend_from_slice(data);
            let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
            encoder.write_all(&bytes).unwrap();
            encoder.finish().unwrap()
        };
        let dir = std::env::temp_dir().join(format!("course-mnist-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pixels = vec![0u8; image_dims.iter().map(|&d| d as usize).product()];
        std::fs::write(dir.join(Split::Test.images_file()), idx(image_dims, &pixels)).unwrap();
        std::fs::write(dir.join(Split::Test.labels_file()), idx(label_dims, labels)).unwrap();
        dir
    }

    fn load_error(dir: &Path) -> String {
        let err = Mnist::load(dir, Split::Test).unwrap_err();
        std::fs::remove_dir_all(dir).unwrap();
        assert!(matches!(err, Error::Format { .. }), "{err}");
        err.to_string()
    }

    #[test]
    fn count_mismatch_is_refused() {
        let dir = write_split("count", &[3, 28, 28], &[2], &[1, 2]);
        let err = load_error(&dir);
        assert!(err.contains("t10k-labels-idx1-ubyte.gz") && err.contains("offset 4"), "{err}");
        assert!(err.contains("2 labels") && err.contains("3 images"), "{err}");
    }

    #[test]
    fn wrong_image_size_is_refused() {
        let dir = write_split("size", &[2, 32, 32], &[2], &[1, 2]);
        let err = load_error(&dir);
        assert!(err.contains("t10k-images-idx3-ubyte.gz") && err.contains("offset 4"), "{err}");
        assert!(err.contains("[2, 32, 32]"), "{err}");
    }

    #[test]
    fn label_above_nine_is_refused() {
        let dir = write_split("label", &[3, 28, 28], &[3], &[1, 10, 2]);
        let err = load_error(&dir);
        // Labels start after the 8-byte header, so example 1 sits at byte 9.
        assert!(err.contains("t10k-labels-idx1-ubyte.gz") && err.contains("offset 9"), "{err}");
        assert!(err.contains("label 10"), "{err}");
    }

    #[test]
    fn a_split_of_no_images_is_refused() {
        // Training would divide by its size, and every mean over it would be NaN.
        let dir = write_split("empty", &[0, 28, 28], &[0], &[]);
        let err = load_error(&dir);
        assert!(err.contains("t10k-images-idx3-ubyte.gz") && err.contains("offset 4") && err.contains("no images"), "{err}");
    }
}
