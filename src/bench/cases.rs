//! The problems the benchmarks time, built once for both of them: `ddpm bench`
//! ([`crate::bench::report`]) and the criterion benches in `benches/`.
//!
//! Shapes: a convolution's `x` is `[N, C, H, W]`, its weight `[K, C, 3, 3]`, its bias
//! `[K]`, its output and output gradient `[N, K, OH, OW]`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::kernels::conv::{conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2dGeometry};

/// `len` values uniform in [-1, 1), the same for the same `seed`.
#[must_use]
pub fn random_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// The UNet's 3x3 convolutions (stride 1, padding 1) at batch 64, as `(C, H = W, K)`:
/// 32 channels at 28x28, 64 at 14x14 and at 7x7.
pub const UNET_CONV3X3: [(usize, usize, usize); 3] = [(32, 28, 32), (64, 14, 64), (64, 7, 64)];

/// One convolution with random inputs and its output buffers, ready to be timed.
#[derive(Clone, Debug)]
pub struct ConvCase {
    /// The convolution's sizes.
    pub geometry: Conv2dGeometry,
    x: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    grad_out: Vec<f32>,
    out: Vec<f32>,
    grad_x: Vec<f32>,
    grad_weight: Vec<f32>,
    grad_bias: Vec<f32>,
}

impl ConvCase {
    /// The 3x3 convolution (stride 1, padding 1) of a batch of 64 `hw x hw` images
    /// from `c` channels to `k`, one of [`UNET_CONV3X3`].
    #[must_use]
    pub fn conv3x3(c: usize, hw: usize, k: usize) -> Self {
        Self::new(Self::conv3x3_geometry(c, hw, k))
    }

    /// The convolution of geometry `g`, with random inputs.
    #[must_use]
    pub fn new(g: Conv2dGeometry) -> Self {
        let out_len = g.n * g.k * g.out_h() * g.out_w();
        let (x_len, weight_len) = (g.n * g.c * g.h * g.w, g.k * g.c * g.kh * g.kw);
        ConvCase {
            geometry: g,
            x: random_vec(x_len, 1),
            weight: random_vec(weight_len, 2),
            bias: random_vec(g.k, 3),
            grad_out: random_vec(out_len, 4),
            out: vec![0.0; out_len],
            grad_x: vec![0.0; x_len],
            grad_weight: vec![0.0; weight_len],
            grad_bias: vec![0.0; g.k],
        }
    }

    /// The geometry of [`conv3x3`](Self::conv3x3): batch 64, 3x3, stride 1, padding 1.
    #[must_use]
    pub fn conv3x3_geometry(c: usize, hw: usize, k: usize) -> Conv2dGeometry {
        Conv2dGeometry { n: 64, c, h: hw, w: hw, k, kh: 3, kw: 3, stride: 1, padding: 1 }
    }

    /// The sizes as the reports print them, e.g. `"N64xC32x28x28xK32"`.
    #[must_use]
    pub fn label(&self) -> String {
        let g = &self.geometry;
        let kernel = if (g.kh, g.kw, g.stride, g.padding) == (3, 3, 1, 1) {
            String::new()
        } else {
            format!(" {}x{}/{}p{}", g.kh, g.kw, g.stride, g.padding)
        };
        format!("N{}xC{}x{}x{}xK{}{kernel}", g.n, g.c, g.h, g.w, g.k)
    }

    /// The forward pass, `g.flops()` flops.
    pub fn forward(&mut self) {
        conv2d_forward(&self.geometry, &self.x, &self.weight, Some(&self.bias), &mut self.out);
    }

    /// The gradient of the input, as many flops as the forward pass.
    pub fn backward_input(&mut self) {
        conv2d_backward_input(&self.geometry, &self.grad_out, &self.weight, &mut self.grad_x);
    }

    /// The gradients of the weight and the bias, as many flops as the forward pass.
    pub fn backward_weight(&mut self) {
        conv2d_backward_weight(&self.geometry, &self.x, &self.grad_out, &mut self.grad_weight, Some(&mut self.grad_bias));
    }

    /// Forward, grad input and grad weight: what training does with a convolution,
    /// 3x the forward flops.
    pub fn forward_backward(&mut self) {
        self.forward();
        self.backward_input();
        self.backward_weight();
    }
}
