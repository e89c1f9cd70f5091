//! Forward ops against loops written from their definitions, in f64, on shapes
//! where no two sizes are equal (so a swapped or added size cannot pass).
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
    // second shape has 3 * 4 * 52 * 56 = 34,944 outputs, over the 2^15 at which
    // the rows are split across threads.
    for (seed, (n, c, h, w, s)) in [(2, 1, 2, 4, 3), (3, 4, 13, 14, 4)].into_iter().enumerate() {
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
