//! Forward ops against loops written from their definitions, in f64, on shapes
//! whose sizes differ from one another (so a swapped or added size cannot pass).
//!
//! The gradient checks compare each backward rule with finite differences of the
//! forward, so a wrong forward with a consistent gradient passes them; these
//! tests pin the forward itself. (The golden cases of the root package check the
//! same ops against PyTorch, in f32.)

use tensor::{attention, rng, Tensor};

fn randn(dims: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::randn(dims, &mut rng(seed))
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{what}[{i}]: {g} against {w}");
    }
}

#[test]
fn attention_is_the_softmax_of_scaled_dot_products_weighting_the_values() {
    let (b, c, l) = (2, 3, 5);
    let (q, k, v) = (randn(&[b, c, l], 1), randn(&[b, c, l], 2), randn(&[b, c, l], 3));
    let (qd, kd, vd) = (q.to_vec(), k.to_vec(), v.to_vec());
    let at = |t: &[f64], bi: usize, ci: usize, li: usize| t[(bi * c + ci) * l + li];
    let mut want = vec![0.0; b * c * l];
    for bi in 0..b {
        for i in 0..l {
            let scores: Vec<f64> =
                (0..l).map(|j| (0..c).map(|ci| at(&qd, bi, ci, i) * at(&kd, bi, ci, j)).sum::<f64>() / (c as f64).sqrt()).collect();
            let top = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = scores.iter().map(|s| (s - top).exp()).sum();
            for ci in 0..c {
                want[(bi * c + ci) * l + i] = (0..l).map(|j| (scores[j] - top).exp() / total * at(&vd, bi, ci, j)).sum();
            }
        }
    }
    let got = attention(&q, &k, &v).unwrap();
    assert_eq!(got.dims(), [b, c, l]);
    assert_close(&got.to_vec(), &want, "attention");
}

#[test]
fn nearest_upsampling_copies_pixel_i_over_s_j_over_s() {
    // 3 is neither the height nor the width, and w + s differs from w s. The
    // second shape has 3 * 5 * 52 * 56 = 43,680 outputs, over the 2^15 at which
    // the rows are split across threads.
    for (seed, (n, c, h, w, s)) in [(2, 1, 2, 4, 3), (3, 5, 13, 14, 4)].into_iter().enumerate() {
        let x = randn(&[n, c, h, w], 4 + seed as u64);
        let xd = x.to_vec();
        let got = x.upsample_nearest2d(s).unwrap();
        assert_eq!(got.dims(), [n, c, h * s, w * s]);
        let mut want = Vec::new();
        for plane in 0..n * c {
            for i in 0..h * s {
                for j in 0..w * s {
                    want.push(xd[(plane * h + i / s) * w + j / s]);
                }
            }
        }
        assert_close(&got.to_vec(), &want, "upsample_nearest2d");
    }
    // Images with no columns (or no rows) upsample to images with none.
    assert_eq!(randn(&[1, 2, 3, 0], 6).upsample_nearest2d(2).unwrap().dims(), [1, 2, 6, 0]);
    assert_eq!(randn(&[1, 2, 0, 3], 7).upsample_nearest2d(2).unwrap().dims(), [1, 2, 0, 6]);
}

#[test]
fn matmul_with_an_empty_axis() {
    // No rows or no columns: an empty product. No inner axis (k = 0): every entry
    // is an empty sum, 0, whatever the output buffer held before.
    assert_eq!(randn(&[0, 3], 8).matmul(&randn(&[3, 4], 9)).unwrap().dims(), [0, 4]);
    assert_eq!(randn(&[2, 3], 10).matmul(&randn(&[3, 0], 11)).unwrap().dims(), [2, 0]);
    assert_eq!(randn(&[5, 0, 3], 12).matmul(&randn(&[5, 3, 2], 13)).unwrap().dims(), [5, 0, 2]);
    for seed in 0..3 {
        // A freed buffer of the output's size, full of non-zero values, for the pool to
        // hand out: 4 * 32 * 40 f64 are 40 KiB, over the pool's 32 KiB minimum.
        drop(randn(&[4, 32, 40], 16 + seed).exp());
        let product = randn(&[4, 32, 0], 14).matmul(&randn(&[4, 0, 40], 15)).unwrap();
        assert_eq!(product.dims(), [4, 32, 40]);
        assert!(product.to_vec().iter().all(|&v| v == 0.0), "{:?}", product.to_vec());
    }
}

/// A unary op's definition, applied to one f64.
type Formula = fn(f64) -> f64;

#[test]
fn unary_ops_are_their_formulas() {
    // Both signs, values near 0, and |x| = 30 where exp(x) or exp(-x) is huge: the
    // stable sigmoid must still give 1 / (1 + e^-x) there.
    let xs = [-30.0, -2.5, -1.0, -0.3, 0.0, 0.2, 0.7, 1.5, 4.0, 30.0];
    let x = Tensor::from_vec(xs.to_vec(), &[2, 5]).unwrap();
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    // GELU's tanh approximation with c = sqrt(2 / pi).
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let gelu = |v: f64| 0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh());
    let cases: [(&str, Tensor<f64>, Formula); 8] = [
        ("neg", x.neg(), |v| -v),
        ("exp", x.exp(), f64::exp),
        ("tanh", x.tanh(), f64::tanh),
        ("relu", x.relu(), |v| v.max(0.0)),
        ("abs", x.abs(), f64::abs),
        ("sqr", x.sqr(), |v| v * v),
        ("clamp", x.clamp(-1.0, 1.5), |v| v.clamp(-1.0, 1.5)),
        ("affine", x.affine(-1.5, 0.25), |v| -1.5 * v + 0.25),
    ];
    for (name, got, f) in cases {
        assert_close(&got.to_vec(), &xs.map(f), name);
    }
    assert_close(&x.sigmoid().to_vec(), &xs.map(sigmoid), "sigmoid");
    assert_close(&x.silu().to_vec(), &xs.map(|v| v * sigmoid(v)), "silu");
    assert_close(&x.gelu().to_vec(), &xs.map(gelu), "gelu");
    let positive = x.abs().add_scalar(0.5);
    let ps = xs.map(|v| v.abs() + 0.5);
    assert_close(&positive.log().to_vec(), &ps.map(f64::ln), "log");
    assert_close(&positive.sqrt().to_vec(), &ps.map(f64::sqrt), "sqrt");
    assert_close(&positive.powf(2.5).to_vec(), &ps.map(|v| v.powf(2.5)), "powf");
}
