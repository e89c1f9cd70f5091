//! A small CNN that recognises MNIST digits. It is not part of diffusion: it is
//! the judge of the samples (`ddpm eval`), whose confidence says whether a sample
//! looks like a digit and whose penultimate features give the MNIST-FID.
//!
//! Shape legend: `B` batch, `F` feature size (128).
//!
//! ```text
//! h = SiLU(conv3x3(x,  1 -> 32))            [B, 32, 28, 28]
//! h = SiLU(conv3x3(h, 32 -> 64, stride 2))  [B, 64, 14, 14]
//! h = SiLU(conv3x3(h, 64 -> 64))            [B, 64, 14, 14]
//! h = SiLU(conv3x3(h, 64 -> 64, stride 2))  [B, 64, 7, 7]
//! f = SiLU(Linear(flatten(h), F))           [B, F]        the features
//! logits = Linear(f, 10)                    [B, 10]
//! ```
//!
//! Parameter names: `conv.0.weight` ... `conv.3.bias`, `features.weight`,
//! `features.bias`, `output.weight`, `output.bias`.

use crate::error::{Error, Result};
use crate::layers::conv2d::Conv2d;
use crate::layers::linear::Linear;
use crate::module::{join, Module};
use tensor::{Float, Rng, Tensor};

/// The number of classes, the digits 0-9.
pub const CLASSES: usize = 10;
/// `F`, the size of the feature vector the MNIST-FID compares.
pub const FEATURES: usize = 128;

/// The digit classifier.
#[derive(Clone, Debug)]
pub struct Classifier<T: Float> {
    /// The four 3x3 convolutions, the second and fourth with stride 2.
    pub conv: Vec<Conv2d<T>>,
    /// `Linear(64 * 7 * 7, F)`.
    pub features: Linear<T>,
    /// `Linear(F, 10)`.
    pub output: Linear<T>,
}

impl<T: Float> Classifier<T> {
    /// A freshly initialised classifier (PyTorch's default initialisation).
    #[must_use]
    pub fn new(rng: &mut Rng) -> Self {
        let conv = vec![
            Conv2d::new(1, 32, 3, 1, 1, rng),
            Conv2d::new(32, 64, 3, 2, 1, rng),
            Conv2d::new(64, 64, 3, 1, 1, rng),
            Conv2d::new(64, 64, 3, 2, 1, rng),
        ];
        Classifier { conv, features: Linear::new(64 * 7 * 7, FEATURES, rng), output: Linear::new(FEATURES, CLASSES, rng) }
    }

    /// The features `f` of images `x [B, 1, 28, 28]` in [-1, 1] -> `[B, F]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] unless `x` is `[B, 1, 28, 28]`.
    pub fn features(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        if x.rank() != 4 || x.dims()[1..] != [1, 28, 28] {
            return Err(Error::ShapeMismatch {
                op: "Classifier::features",
                msg: format!("images {:?}; expected [B, 1, 28, 28]", x.dims()),
            });
        }
        let mut h = x.clone();
        for conv in &self.conv {
            h = conv.forward(&h)?.silu();
        }
        let b = x.dims()[0];
        Ok(self.features.forward(&h.reshape(&[b, 64 * 7 * 7])?)?.silu()) // [B, F]
    }

    /// The class logits of images `x [B, 1, 28, 28]` -> `[B, 10]`.
    ///
    /// ```
    /// let classifier = nn::Classifier::<f32>::new(&mut tensor::rng(0));
    /// let logits = classifier.forward(&tensor::Tensor::zeros(&[3, 1, 28, 28]))?;
    /// assert_eq!(logits.dims(), &[3, 10]);
    /// # Ok::<(), nn::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] unless `x` is `[B, 1, 28, 28]`.
    pub fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.output.forward(&self.features(x)?)
    }
}

impl<T: Float> Module<T> for Classifier<T> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<T>)) {
        for (i, conv) in self.conv.iter().enumerate() {
            conv.visit_params(&join(prefix, &format!("conv.{i}")), f);
        }
        self.features.visit_params(&join(prefix, "features"), f);
        self.output.visit_params(&join(prefix, "output"), f);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        for (i, conv) in self.conv.iter_mut().enumerate() {
            conv.visit_params_mut(&join(prefix, &format!("conv.{i}")), f);
        }
        self.features.visit_params_mut(&join(prefix, "features"), f);
        self.output.visit_params_mut(&join(prefix, "output"), f);
    }
}
