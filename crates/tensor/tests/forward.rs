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
    let cases: [(&str, Tensor<f64>, Formula); 12] = [
        ("neg", x.neg(), |v| -v),
        ("exp", x.exp(), f64::exp),
        ("tanh", x.tanh(), f64::tanh),
        ("relu", x.relu(), |v| v.max(0.0)),
        ("abs", x.abs(), f64::abs),
        ("sqr", x.sqr(), |v| v * v),
        ("clamp", x.clamp(-1.0, 1.5), |v| v.clamp(-1.0, 1.5)),
        ("affine", x.affine(-1.5, 0.25), |v| -1.5 * v + 0.25),
        // The scalar forms, each an affine map.
        ("add_scalar", x.add_scalar(0.75), |v| v + 0.75),
        ("sub_scalar", x.sub_scalar(0.75), |v| v - 0.75),
        ("mul_scalar", x.mul_scalar(-3.0), |v| -3.0 * v),
        ("div_scalar", x.div_scalar(4.0), |v| v / 4.0),
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

/// `x` of `dims` holding small integers, so that maxima tie.
fn with_ties(dims: &[usize]) -> Tensor<f64> {
    let n: usize = dims.iter().product();
    Tensor::from_vec((0..n).map(|i| ((i * 7 + i / 5) % 4) as f64).collect(), dims).unwrap()
}

#[test]
fn max_and_argmax_take_the_first_largest_element() {
    // x [3, 4, 5] reduced along each axis: a loop over that axis keeps the first
    // index whose value is strictly larger than the best so far.
    let dims = [3, 4, 5];
    let x = with_ties(&dims);
    let xd = x.to_vec();
    let strides = [20, 5, 1];
    for axis in 0..3 {
        let (mut want, mut want_at) = (Vec::new(), Vec::new());
        for flat in 0..60 {
            let coords = [flat / 20, flat / 5 % 4, flat % 5];
            if coords[axis] != 0 {
                continue;
            }
            let at =
                (1..dims[axis]).fold(0, |best, i| if xd[flat + i * strides[axis]] > xd[flat + best * strides[axis]] { i } else { best });
            want.push(xd[flat + at * strides[axis]]);
            want_at.push(at);
        }
        let max = x.max(&[axis], false).unwrap();
        let mut out_dims = dims.to_vec();
        out_dims.remove(axis);
        assert_eq!(max.dims(), out_dims, "max along {axis}");
        assert_close(&max.to_vec(), &want, &format!("max along {axis}"));
        assert_eq!(x.argmax(axis).unwrap(), want_at, "argmax along {axis}");
        out_dims.insert(axis, 1);
        assert_eq!(x.max(&[axis], true).unwrap().dims(), out_dims, "max along {axis}, keepdim");
    }
    // Over two axes at once: each of the 4 rows of 15 has the maximum 3.
    assert_eq!(x.max(&[0, 2], false).unwrap().to_vec(), vec![3.0; 4]);
    // The gradient goes to the first of the tied maxima only.
    let row = Tensor::from_vec(vec![1.0, 7.0, 2.0, 7.0], &[4]).unwrap().requires_grad();
    let grads = row.max(&[0], false).unwrap().backward().unwrap();
    assert_eq!(grads.get(&row).unwrap().to_vec(), vec![0.0, 1.0, 0.0, 0.0]);
    // A NaN is never hidden by a max, wherever it stands.
    for at in 0..3 {
        let mut v = vec![1.0, 5.0, 3.0];
        v[at] = f64::NAN;
        assert!(Tensor::from_vec(v, &[3]).unwrap().max(&[0], false).unwrap().to_vec()[0].is_nan(), "NaN at {at}");
    }
}

#[test]
fn variance_divides_by_n_or_by_n_minus_one() {
    // var = sum((x - mean)^2) / n, or / (n - 1) for the sample variance, over the
    // axes {1} (4 values a row) and {0, 2} (6 values a row).
    let x = randn(&[2, 4, 3], 21);
    let xd = x.to_vec();
    let at = |i: usize, j: usize, k: usize| xd[(i * 4 + j) * 3 + k];
    let variance = |v: &[f64], unbiased: bool| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (v.len() - usize::from(unbiased)) as f64
    };
    // The (i, k) pairs of axes 0 and 2, in row-major order.
    let pairs = || (0..2).flat_map(|i| (0..3).map(move |k| (i, k)));
    for unbiased in [false, true] {
        let rows: Vec<f64> = pairs().map(|(i, k)| variance(&(0..4).map(|j| at(i, j, k)).collect::<Vec<_>>(), unbiased)).collect();
        assert_close(&x.var(&[1], false, unbiased).unwrap().to_vec(), &rows, &format!("var over 1, unbiased {unbiased}"));
        let cols: Vec<f64> = (0..4).map(|j| variance(&pairs().map(|(i, k)| at(i, j, k)).collect::<Vec<_>>(), unbiased)).collect();
        assert_close(&x.var(&[0, 2], false, unbiased).unwrap().to_vec(), &cols, &format!("var over 0 and 2, unbiased {unbiased}"));
    }
}

#[test]
fn where_and_the_comparisons_follow_their_definitions() {
    // where: mask != 0 ? a : b, the mask [2, 3] and b [3] broadcast against a [2, 1].
    let mask = Tensor::from_vec(vec![1.0, 0.0, -2.0, 0.0, 0.5, 0.0], &[2, 3]).unwrap();
    let a = Tensor::from_vec(vec![10.0, 20.0], &[2, 1]).unwrap();
    let b = Tensor::from_vec(vec![-1.0, -2.0, -3.0], &[3]).unwrap();
    assert_eq!(mask.where_cond(&a, &b).unwrap().to_vec(), vec![10.0, -2.0, 10.0, -1.0, 20.0, -3.0]);
    // gt, ge and lt, with equal values to pin the edges; 1 where true, else 0.
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
    let two = Tensor::from_vec(vec![2.0], &[1]).unwrap();
    assert_eq!(x.gt(&two).unwrap().to_vec(), vec![0.0, 0.0, 1.0]);
    assert_eq!(x.ge(&two).unwrap().to_vec(), vec![0.0, 1.0, 1.0]);
    assert_eq!(x.lt(&two).unwrap().to_vec(), vec![1.0, 0.0, 0.0]);
    // minimum: min(a, b) elementwise, broadcast.
    let y = Tensor::from_vec(vec![1.0, 5.0, -2.0, 4.0, 0.0, 9.0], &[2, 3]).unwrap();
    assert_eq!(y.minimum(&two).unwrap().to_vec(), vec![1.0, 2.0, -2.0, 2.0, 0.0, 2.0]);
    assert_eq!(two.minimum(&y).unwrap().to_vec(), vec![1.0, 2.0, -2.0, 2.0, 0.0, 2.0]);
}

#[test]
fn gather_reads_x_at_the_index_along_its_axis() {
    // out[i, j, k] = x[i, index[i, j, k], k] along axis 1 (and likewise along 0
    // and 2), for an index shape that differs from x's along the axis only.
    let dims = [3, 4, 5];
    let x = randn(&dims, 31);
    let xd = x.to_vec();
    let read = |c: [usize; 3]| xd[(c[0] * dims[1] + c[1]) * dims[2] + c[2]];
    for axis in 0..3 {
        let mut index_dims = dims;
        index_dims[axis] = 2;
        let n: usize = index_dims.iter().product();
        // The coordinates of output element f, row-major in index_dims.
        let coords = |f: usize| [f / (index_dims[1] * index_dims[2]), f / index_dims[2] % index_dims[1], f % index_dims[2]];
        let index: Vec<usize> = (0..n).map(|f| (f * 5 + 3) % dims[axis]).collect();
        let want: Vec<f64> = (0..n)
            .map(|f| {
                let mut c = coords(f);
                c[axis] = index[f];
                read(c)
            })
            .collect();
        let got = x.gather(axis, &index, &index_dims).unwrap();
        assert_eq!(got.dims(), index_dims);
        assert_close(&got.to_vec(), &want, &format!("gather along {axis}"));
        // index_select with the same indices for every row: a slice of x.
        let picked = x.index_select(axis, &[2, 0]).unwrap();
        let want: Vec<f64> = (0..n)
            .map(|f| {
                let mut c = coords(f);
                c[axis] = [2, 0][c[axis]];
                read(c)
            })
            .collect();
        assert_close(&picked.to_vec(), &want, &format!("index_select along {axis}"));
    }
}

#[test]
fn squeeze_unsqueeze_and_cat_keep_the_elements_in_order() {
    // unsqueeze(a) inserts an axis of size 1 at a, squeeze(a) removes it; neither
    // moves an element in row-major order.
    let x = randn(&[2, 3], 41);
    for (axis, dims) in [(0, [1, 2, 3]), (1, [2, 1, 3]), (2, [2, 3, 1])] {
        let u = x.unsqueeze(axis).unwrap();
        assert_eq!(u.dims(), dims, "unsqueeze({axis})");
        assert_eq!(u.to_vec(), x.to_vec());
        let s = u.squeeze(axis).unwrap();
        assert_eq!((s.dims(), s.to_vec()), (x.dims(), x.to_vec()), "squeeze({axis})");
    }
    // Joining rows of no elements gives rows of no elements.
    let empty = Tensor::cat(&[Tensor::<f64>::zeros(&[2, 0]), Tensor::zeros(&[3, 0])], 0).unwrap();
    assert_eq!(empty.dims(), [5, 0]);
    let joined = Tensor::cat(&[Tensor::<f64>::zeros(&[2, 0]), x.clone()], 1).unwrap();
    assert_eq!((joined.dims(), joined.to_vec()), (x.dims(), x.to_vec()));
}

#[test]
fn a_binary_op_with_one_output_element_reads_each_view_at_its_offset() {
    // Every axis of size 1 (and a rank-0 operand): the output is one f(a, b),
    // read where each view starts.
    let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[4]).unwrap().narrow(0, 2, 1).unwrap().reshape(&[1, 1]).unwrap();
    let b = Tensor::from_vec(vec![10.0, 20.0], &[2]).unwrap().narrow(0, 1, 1).unwrap();
    assert_eq!(a.sub(&b).unwrap().to_vec(), vec![3.0 - 20.0]);
    assert_eq!(Tensor::scalar(5.0).sub(&b).unwrap().to_vec(), vec![5.0 - 20.0]);
}

#[test]
fn group_norm_is_shift_invariant_far_from_zero() {
    // (x - mean) / std does not change when a constant is added to x. With the
    // data 10^6 away from 0 (so x^2 about 10^12) in f64, the sum of squares minus
    // n mean^2 would lose about 12 of its 16 digits to cancellation; the two-pass
    // variance (squared deviations from the mean) keeps the result to 1e-8.
    let x = randn(&[2, 6, 5, 7], 51);
    let (w, b) = (randn(&[6], 52), randn(&[6], 53));
    let near = x.group_norm(3, &w, &b, 1e-5).unwrap();
    let far = x.add_scalar(1e6).group_norm(3, &w, &b, 1e-5).unwrap();
    for (i, (f, n)) in far.to_vec().iter().zip(near.to_vec()).enumerate() {
        assert!((f - n).abs() <= 1e-8, "element {i}: {f} far from 0 against {n} near it");
    }
    // A rank-2 x [N, C]: each group of channels is one block.
    let flat = randn(&[3, 6], 54);
    let want = tensor::group_norm_composed(&flat, 2, &w, &b, 1e-5).unwrap();
    assert_close(&flat.group_norm(2, &w, &b, 1e-5).unwrap().to_vec(), &want.to_vec(), "group_norm of [3, 6]");
}
