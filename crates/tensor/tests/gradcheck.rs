//! Every primitive's gradient against central finite differences in f64, on odd
//! shapes: size-1 axes, non-contiguous views, broadcasting in both directions.
//! The last assertion fails if a primitive of `OpKind::ALL` was not checked.

use std::collections::BTreeSet;
use tensor::{attention, attention_composed, gradcheck, group_norm_composed, rng, Addend, GroupNormSilu, OpKind, Result, Tensor};

type F = Box<dyn Fn(&[Tensor<f64>]) -> Result<Tensor<f64>>>;

/// Normal entries.
fn randn(dims: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::randn(dims, &mut rng(seed))
}

/// Entries in [0.5, 2): away from the kinks and poles of log, sqrt, div, abs, relu.
fn positive(dims: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::rand_uniform(dims, 0.5, 2.0, &mut rng(seed))
}

/// Entries with |x| in [0.5, 2) and random signs: away from 0 but on both sides.
fn signed_away_from_zero(dims: &[usize], seed: u64) -> Tensor<f64> {
    let magnitude = positive(dims, seed).to_vec();
    let signs = randn(dims, seed + 1).to_vec();
    let data = magnitude.iter().zip(&signs).map(|(m, s)| if *s < 0.0 { -m } else { *m }).collect();
    Tensor::from_vec(data, dims).unwrap()
}

fn cases() -> Vec<(&'static str, F, Vec<Tensor<f64>>)> {
    let s = signed_away_from_zero;
    vec![
        ("neg", Box::new(|x: &[Tensor<f64>]| Ok(x[0].neg())), vec![randn(&[2, 3], 1)]),
        ("exp", Box::new(|x: &[Tensor<f64>]| Ok(x[0].exp())), vec![randn(&[3, 1, 2], 2)]),
        ("log", Box::new(|x: &[Tensor<f64>]| Ok(x[0].log())), vec![positive(&[5], 3)]),
        ("sqrt", Box::new(|x: &[Tensor<f64>]| Ok(x[0].sqrt())), vec![positive(&[2, 2], 4)]),
        ("tanh", Box::new(|x: &[Tensor<f64>]| Ok(x[0].tanh())), vec![randn(&[7], 5)]),
        ("sigmoid", Box::new(|x: &[Tensor<f64>]| Ok(x[0].sigmoid())), vec![randn(&[1, 7], 6)]),
        ("relu", Box::new(|x: &[Tensor<f64>]| Ok(x[0].relu())), vec![s(&[3, 3], 7)]),
        ("silu", Box::new(|x: &[Tensor<f64>]| Ok(x[0].silu())), vec![randn(&[3, 5], 8)]),
        ("gelu", Box::new(|x: &[Tensor<f64>]| Ok(x[0].gelu())), vec![randn(&[3, 5], 9)]),
        ("abs", Box::new(|x: &[Tensor<f64>]| Ok(x[0].abs())), vec![s(&[4, 1], 10)]),
        ("powf", Box::new(|x: &[Tensor<f64>]| Ok(x[0].powf(2.5))), vec![positive(&[3, 2], 11)]),
        // The square has its own path (a product, not pow), on both signs.
        ("sqr", Box::new(|x: &[Tensor<f64>]| Ok(x[0].sqr())), vec![randn(&[3, 4], 111)]),
        // Values at least 0.5 away from the bounds (the kinks) on either side.
        ("clamp", Box::new(|x: &[Tensor<f64>]| Ok(x[0].mul_scalar(2.0).clamp(-1.0, 1.0))), vec![s(&[9], 12)]),
        ("affine", Box::new(|x: &[Tensor<f64>]| Ok(x[0].affine(-1.5, 0.25))), vec![randn(&[2, 1, 3], 13)]),
        // Broadcasting in both directions: [3,1,4] with [2,1] -> [3,2,4].
        ("add", Box::new(|x: &[Tensor<f64>]| x[0].add(&x[1])), vec![randn(&[3, 1, 4], 14), randn(&[2, 1], 15)]),
        ("sub", Box::new(|x: &[Tensor<f64>]| x[0].sub(&x[1])), vec![randn(&[1, 5], 16), randn(&[3, 1], 17)]),
        ("mul", Box::new(|x: &[Tensor<f64>]| x[0].mul(&x[1])), vec![randn(&[2, 3], 18), randn(&[3], 19)]),
        ("div", Box::new(|x: &[Tensor<f64>]| x[0].div(&x[1])), vec![randn(&[4, 1], 20), s(&[1, 3], 21)]),
        ("maximum", Box::new(|x: &[Tensor<f64>]| x[0].maximum(&x[1])), vec![randn(&[2, 3], 22), randn(&[3], 23)]),
        ("sum over axes", Box::new(|x: &[Tensor<f64>]| x[0].sum(&[0, 2], false)), vec![randn(&[2, 3, 4], 24)]),
        ("sum keepdim", Box::new(|x: &[Tensor<f64>]| x[0].sum(&[1], true)), vec![randn(&[2, 3, 1], 25)]),
        ("max", Box::new(|x: &[Tensor<f64>]| x[0].max(&[1], false)), vec![randn(&[3, 4, 2], 26)]),
        ("mean", Box::new(|x: &[Tensor<f64>]| x[0].mean(&[0], true)), vec![randn(&[3, 2], 27)]),
        ("var", Box::new(|x: &[Tensor<f64>]| x[0].var(&[1], false, true)), vec![randn(&[2, 5], 28)]),
        ("reshape", Box::new(|x: &[Tensor<f64>]| Ok(x[0].reshape(&[3, 2])?.exp())), vec![randn(&[2, 3], 29)]),
        // A non-contiguous view feeding a unary op and a reshape (which copies).
        ("permute", Box::new(|x: &[Tensor<f64>]| x[0].permute(&[2, 0, 1])?.tanh().reshape(&[24])), vec![randn(&[2, 3, 4], 30)]),
        ("narrow", Box::new(|x: &[Tensor<f64>]| Ok(x[0].narrow(1, 1, 2)?.sqr())), vec![randn(&[3, 4], 31)]),
        // an inner axis with a stride above 1 and a start past it: the slice's offset is start * stride
        ("narrow", Box::new(|x: &[Tensor<f64>]| Ok(x[0].narrow(1, 3, 2)?.sqr())), vec![randn(&[3, 5, 2], 84)]),
        ("broadcast_to", Box::new(|x: &[Tensor<f64>]| Ok(x[0].broadcast_to(&[2, 3, 4])?.sin_like())), vec![randn(&[3, 1], 32)]),
        ("copy", Box::new(|x: &[Tensor<f64>]| x[0].t()?.contiguous()), vec![randn(&[2, 5], 33)]),
        (
            "cat",
            Box::new(|x: &[Tensor<f64>]| Tensor::cat(&[x[0].clone(), x[1].t()?, x[0].sqr()], 1)),
            vec![randn(&[2, 3], 34), randn(&[1, 2], 35)],
        ),
        (
            "stack",
            Box::new(|x: &[Tensor<f64>]| Tensor::stack(&[x[0].clone(), x[1].exp()], 0)),
            vec![randn(&[2, 3], 36), randn(&[2, 3], 37)],
        ),
        // Batched, broadcast batch axes, transposed (strided) operands.
        ("matmul", Box::new(|x: &[Tensor<f64>]| x[0].matmul(&x[1])), vec![randn(&[2, 1, 3, 4], 38), randn(&[3, 4, 5], 39)]),
        ("matmul transposed", Box::new(|x: &[Tensor<f64>]| x[0].t()?.matmul(&x[1].t()?)), vec![randn(&[4, 3], 40), randn(&[5, 4], 41)]),
        (
            "linear",
            Box::new(|x: &[Tensor<f64>]| x[0].linear(&x[1], Some(&x[2]))),
            vec![randn(&[3, 4], 42), randn(&[2, 4], 43), randn(&[2], 44)],
        ),
        (
            "conv2d stride 2 pad 1",
            Box::new(|x: &[Tensor<f64>]| x[0].conv2d(&x[1], Some(&x[2]), 2, 1)),
            vec![randn(&[2, 3, 5, 4], 45), randn(&[2, 3, 3, 3], 46), randn(&[2], 47)],
        ),
        (
            "conv2d 2x3 no bias",
            Box::new(|x: &[Tensor<f64>]| x[0].conv2d(&x[1], None, 1, 0)),
            vec![randn(&[1, 2, 4, 5], 48), randn(&[3, 2, 2, 3], 49)],
        ),
        (
            "group_norm",
            Box::new(|x: &[Tensor<f64>]| x[0].group_norm(2, &x[1], &x[2], 1e-5)),
            vec![randn(&[2, 4, 3, 3], 50), randn(&[4], 51), randn(&[4], 52)],
        ),
        (
            "group_norm_silu",
            Box::new(|x: &[Tensor<f64>]| x[0].group_norm_silu(2, &x[1], &x[2], 1e-5)),
            vec![randn(&[2, 4, 3, 3], 73), randn(&[4], 74), randn(&[4], 75)],
        ),
        (
            "group_norm composed",
            Box::new(|x: &[Tensor<f64>]| group_norm_composed(&x[0], 2, &x[1], &x[2], 1e-5)),
            vec![randn(&[2, 4, 3, 1], 53), randn(&[4], 54), randn(&[4], 55)],
        ),
        ("upsample_nearest2d", Box::new(|x: &[Tensor<f64>]| x[0].upsample_nearest2d(2)), vec![randn(&[1, 2, 2, 3], 56)]),
        // Any other factor takes the other path of the backward.
        ("upsample_nearest2d by 3", Box::new(|x: &[Tensor<f64>]| x[0].upsample_nearest2d(3)), vec![randn(&[2, 1, 3, 2], 57)]),
        (
            "where",
            Box::new(|x: &[Tensor<f64>]| {
                let mask = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0], &[2, 3])?;
                mask.where_cond(&x[0], &x[1])
            }),
            vec![randn(&[2, 3], 57), randn(&[3], 58)],
        ),
        ("index_select", Box::new(|x: &[Tensor<f64>]| x[0].index_select(1, &[2, 0, 2])), vec![randn(&[2, 3, 2], 59)]),
        ("gather", Box::new(|x: &[Tensor<f64>]| x[0].gather(1, &[1, 1, 0, 3, 2, 2], &[3, 2])), vec![randn(&[3, 4], 60)]),
        ("softmax", Box::new(|x: &[Tensor<f64>]| x[0].softmax(1)), vec![randn(&[3, 5], 61)]),
        ("log_softmax", Box::new(|x: &[Tensor<f64>]| x[0].log_softmax(0)), vec![randn(&[4, 2], 62)]),
        ("mse_loss", Box::new(|x: &[Tensor<f64>]| x[0].mse_loss(&x[1])), vec![randn(&[2, 3], 63), randn(&[2, 3], 64)]),
        ("cross_entropy", Box::new(|x: &[Tensor<f64>]| x[0].cross_entropy(&[2, 0, 1])), vec![randn(&[3, 4], 65)]),
        (
            "attention",
            Box::new(|x: &[Tensor<f64>]| attention(&x[0], &x[1], &x[2])),
            vec![randn(&[2, 3, 5], 66), randn(&[2, 3, 5], 67), randn(&[2, 3, 5], 68)],
        ),
        // The fused op on one stacked input with one position, and the composed twin.
        ("attention_qkv", Box::new(|x: &[Tensor<f64>]| x[0].attention_qkv()), vec![randn(&[3, 6, 1], 85)]),
        (
            "attention composed",
            Box::new(|x: &[Tensor<f64>]| attention_composed(&x[0], &x[1], &x[2])),
            vec![randn(&[1, 2, 4], 86), randn(&[1, 2, 4], 87), randn(&[1, 2, 4], 88)],
        ),
    ]
}

/// A smooth op through which a broadcast gradient must sum: sin via exp is not a
/// primitive, so use x * tanh(x), which is.
trait SinLike {
    fn sin_like(&self) -> Tensor<f64>;
}
impl SinLike for Tensor<f64> {
    fn sin_like(&self) -> Tensor<f64> {
        self.mul(&self.tanh()).unwrap()
    }
}

#[test]
fn every_primitive_matches_finite_differences() {
    let mut covered = BTreeSet::new();
    for (name, f, inputs) in cases() {
        let report = gradcheck(&*f, &inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            report.max_error < 1e-6,
            "{name}: analytic and numeric gradients differ by {:e} at input {} element {}",
            report.max_error,
            report.worst_at.0,
            report.worst_at.1
        );
        covered.extend(report.kinds);
    }
    let missing: Vec<_> = OpKind::ALL.iter().filter(|k| !covered.contains(k)).collect();
    assert!(missing.is_empty(), "primitives without a gradient check: {missing:?}");
}

/// The fused attention against its composed twin (`matmul`, `softmax`,
/// `matmul`): the same values and gradients of q, k and v to rounding, in f64
/// and f32, at the UNet's 7 x 7 (49 positions, 32 channels) and at odd sizes
/// (one position, one channel, 17 positions with 5 channels).
#[test]
fn fused_attention_equals_composed_reference() {
    fn check<T: tensor::Float>((b, c, l): (usize, usize, usize), tol: f64, seed: u64) {
        let qkv = randn(&[b, 3 * c, l], seed).cast::<T>().requires_grad();
        let (q, k, v) = (qkv.narrow(1, 0, c).unwrap(), qkv.narrow(1, c, c).unwrap(), qkv.narrow(1, 2 * c, c).unwrap());
        let fused = qkv.attention_qkv().unwrap();
        let composed = attention_composed(&q, &k, &v).unwrap();
        let upstream = randn(&[b, c, l], seed + 1).cast::<T>();
        let what = format!("{b} x {c} x {l} in {}", T::DTYPE);
        let worst = |a: &Tensor<T>, b: &Tensor<T>| {
            a.to_vec().iter().zip(b.to_vec()).map(|(x, y)| (x.to_f64() - y.to_f64()).abs()).fold(0.0, f64::max)
        };
        assert!(worst(&fused, &composed) < tol, "values, {what}: {:e}", worst(&fused, &composed));
        let gf = fused.mul(&upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = composed.mul(&upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gc) = (gf.get(&qkv).unwrap(), gc.get(&qkv).unwrap());
        assert!(worst(gf, gc) < tol, "gradients, {what}: {:e}", worst(gf, gc));
    }
    for (i, shape) in [(4, 32, 49), (2, 1, 1), (3, 1, 6), (2, 5, 17)].into_iter().enumerate() {
        check::<f64>(shape, 1e-12, 150 + 2 * i as u64);
        check::<f32>(shape, 1e-4, 150 + 2 * i as u64);
    }
}

/// Scores far from 0 (q and k of size 12, so |S| reaches the hundreds): in f32
/// `exp` overflows past 88.7, and only the softmax's shift by the row's largest
/// score keeps the fused op finite and equal to its twin.
#[test]
fn fused_attention_of_large_scores_stays_finite() {
    let qkv = randn(&[2, 3 * 8, 49], 160).mul_scalar(12.0).cast::<f32>();
    let (q, k, v) = (qkv.narrow(1, 0, 8).unwrap(), qkv.narrow(1, 8, 8).unwrap(), qkv.narrow(1, 16, 8).unwrap());
    let scores = q.t().unwrap().matmul(&k).unwrap().to_vec();
    assert!(scores.iter().any(|s| s.abs() > 200.0), "the case reaches scores that overflow exp");
    let (fused, composed) = (qkv.attention_qkv().unwrap().to_vec(), attention_composed(&q, &k, &v).unwrap().to_vec());
    assert!(fused.iter().all(|v| v.is_finite()));
    let worst = fused.iter().zip(&composed).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst < 1e-3, "{worst:e}");
}

/// No images, no channels or no positions: an empty output of the right shape,
/// and an empty gradient of the input's shape (nothing is cut into chunks of 0).
#[test]
fn fused_attention_of_empty_shapes() {
    for (b, c, l) in [(0, 2, 5), (2, 0, 5), (2, 2, 0)] {
        let qkv = Tensor::<f64>::zeros(&[b, 3 * c, l]).requires_grad();
        let out = qkv.attention_qkv().unwrap();
        assert_eq!(out.dims(), [b, c, l]);
        let grads = out.backward_with(&Tensor::zeros(&[b, c, l])).unwrap();
        assert_eq!(grads.get(&qkv).unwrap().dims(), [b, 3 * c, l], "{b} x {c} x {l}");
    }
}

/// The fused group norm against its composed twin, values and gradients. The
/// second shape's blocks (2 x 90 values) run the sums' lane loops twice with a
/// tail of 52 (64 lanes for the statistics), and each channel's row of 90 twice
/// with a tail of 26 (32 lanes for the backward's sums); the first's blocks of
/// 40 are all tail.
#[test]
fn fused_group_norm_equals_composed_reference() {
    for (dims, groups, seed) in [([3, 6, 4, 5], 3, 70), ([2, 4, 9, 10], 2, 80)] {
        let c = dims[1];
        let x = randn(&dims, seed).add_scalar(3.0).requires_grad();
        let (w, b) = (randn(&[c], seed + 1).requires_grad(), randn(&[c], seed + 2).requires_grad());
        let upstream = randn(&dims, seed + 3);
        let fused = x.group_norm(groups, &w, &b, 1e-5).unwrap();
        let composed = group_norm_composed(&x, groups, &w, &b, 1e-5).unwrap();
        assert!(fused.allclose(&composed, 1e-12), "{dims:?}");
        let gf = fused.mul(&upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = composed.mul(&upstream).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, p) in [("x", &x), ("weight", &w), ("bias", &b)] {
            assert!(gf.get(p).unwrap().allclose(gc.get(p).unwrap(), 1e-10), "{dims:?}: gradient of {name}");
        }
    }
}

/// The fused `silu(group_norm(x))` against its unfused twin, `group_norm` then
/// `silu`: the same values and the same gradients for x, weight and bias, bit for
/// bit, in f32 and f64 (the fused backward recomputes the normalised values with
/// the forward's own multiply-add).
#[test]
fn fused_group_norm_silu_equals_group_norm_then_silu_bit_for_bit() {
    fn check<T: tensor::Float>(x: Tensor<T>, w: Tensor<T>, b: Tensor<T>, upstream: &Tensor<T>) {
        let (x, w, b) = (x.requires_grad(), w.requires_grad(), b.requires_grad());
        let fused = x.group_norm_silu(3, &w, &b, 1e-5).unwrap();
        let twin = x.group_norm(3, &w, &b, 1e-5).unwrap().silu();
        let bits = |t: &Tensor<T>| t.to_vec().iter().map(|v| v.to_f64().to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused), bits(&twin));
        let gf = fused.mul(upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let gt = twin.mul(upstream).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, p) in [("x", &x), ("weight", &w), ("bias", &b)] {
            assert_eq!(bits(gf.get(p).unwrap()), bits(gt.get(p).unwrap()), "gradient of {name}");
        }
    }
    let (x, w, b, g) = (randn(&[3, 6, 5, 7], 76), randn(&[6], 77), randn(&[6], 78), randn(&[3, 6, 5, 7], 79));
    check(x.cast::<f32>(), w.cast::<f32>(), b.cast::<f32>(), &g.cast::<f32>());
    check(x, w, b, &g);
}

/// The addends `group_norm_silu_conv2d` takes: none, one a plane (a
/// residual block's time embedding), a whole output (its skip path), and
/// one of another shape that `add` broadcasts (the op falls back to the
/// separate ops).
#[derive(Clone, Copy, Debug)]
enum AddendShape {
    None,
    PerPlane,
    Whole,
    PerChannel,
}

/// `group_norm_silu_conv2d` against its twin, `group_norm_silu` then
/// `conv2d` then `add`, bit for bit in f32 and f64: without a graph (the
/// statistics here, the normalisation and the addition inside the
/// convolution) on the Winograd path (7 x 7 and 6 x 5 images, 32 and 48
/// channels) and off it (16 channels, stride 2, one output channel, no
/// bias), with each kind of addend; with a graph, where it is the separate
/// ops, the same values and the same gradients for all six inputs.
#[test]
fn group_norm_silu_conv2d_equals_group_norm_silu_then_conv2d_bit_for_bit() {
    fn bits<T: tensor::Float>(t: &Tensor<T>) -> Vec<u64> {
        t.to_vec().iter().map(|v| v.to_f64().to_bits()).collect()
    }
    fn on_its_side<T: tensor::Float>(a: &Tensor<T>, left: bool) -> Addend<'_, T> {
        if left {
            Addend::Left(a)
        } else {
            Addend::Right(a)
        }
    }
    fn check<T: tensor::Float>(
        (n, c, h, w, k, groups, stride, with_bias): (usize, usize, usize, usize, usize, usize, usize, bool),
        (shape, left): (AddendShape, bool),
        seed: u64,
    ) {
        let x = randn(&[n, c, h, w], seed).cast::<T>();
        let (nw, nb) = (randn(&[c], seed + 1).cast::<T>(), randn(&[c], seed + 2).cast::<T>());
        let (cw, cb) = (randn(&[k, c, 3, 3], seed + 3).mul_scalar(0.1).cast::<T>(), randn(&[k], seed + 4).cast::<T>());
        let cb = with_bias.then_some(&cb);
        let side = |s: usize| (s + 2 - 3) / stride + 1;
        let add = match shape {
            AddendShape::None => None,
            AddendShape::PerPlane => Some(randn(&[n, k, 1, 1], seed + 6).cast::<T>()),
            AddendShape::Whole => Some(randn(&[n, k, side(h), side(w)], seed + 6).cast::<T>()),
            AddendShape::PerChannel => Some(randn(&[k, 1, 1], seed + 6).cast::<T>()),
        };
        let what = format!("{n} x {c} x {h} x {w} -> {k}, stride {stride}, addend {shape:?}, on the left: {left}");
        let norm = GroupNormSilu { groups, weight: &nw, bias: &nb, eps: 1e-5 };
        let twin = |x: &Tensor<T>, nw: &Tensor<T>, nb: &Tensor<T>, cw: &Tensor<T>, cb: Option<&Tensor<T>>, add: Option<&Tensor<T>>| {
            let out = x.group_norm_silu(groups, nw, nb, 1e-5).unwrap().conv2d(cw, cb, stride, 1).unwrap();
            match add {
                None => out,
                Some(a) if left => a.add(&out).unwrap(),
                Some(a) => out.add(a).unwrap(),
            }
        };
        let fused = x.group_norm_silu_conv2d(&norm, &cw, cb, (stride, 1), add.as_ref().map(|a| on_its_side(a, left))).unwrap();
        assert_eq!(bits(&fused), bits(&twin(&x, &nw, &nb, &cw, cb, add.as_ref())), "no graph: {what}");
        // With a graph.
        let (x, nw, nb, cw) = (x.requires_grad(), nw.requires_grad(), nb.requires_grad(), cw.requires_grad());
        let (cb, add) = (cb.map(|b| b.clone().requires_grad()), add.map(Tensor::requires_grad));
        let norm = GroupNormSilu { groups, weight: &nw, bias: &nb, eps: 1e-5 };
        let fused = x.group_norm_silu_conv2d(&norm, &cw, cb.as_ref(), (stride, 1), add.as_ref().map(|a| on_its_side(a, left))).unwrap();
        let twin = twin(&x, &nw, &nb, &cw, cb.as_ref(), add.as_ref());
        assert_eq!(bits(&fused), bits(&twin), "graph: {what}");
        // The graph's add op takes the addend on its side.
        if let Some(a) = &add {
            let first_input = fused.op().map(|op| op.inputs()[0].id());
            assert_eq!(first_input == Some(a.id()), left, "the addend's side in the graph: {what}");
        }
        let upstream = randn(fused.dims(), seed + 5).cast::<T>();
        let gf = fused.mul(&upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let gt = twin.mul(&upstream).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, p) in [("x", &x), ("norm weight", &nw), ("norm bias", &nb), ("conv weight", &cw)]
            .into_iter()
            .chain(cb.as_ref().map(|b| ("conv bias", b)))
            .chain(add.as_ref().map(|a| ("addend", a)))
        {
            assert_eq!(bits(gf.get(p).unwrap()), bits(gt.get(p).unwrap()), "gradient of {name}: {what}");
        }
    }
    for (case, seed) in [
        ((3, 32, 7, 7, 32, 8, 1, true), 90),
        ((2, 48, 6, 5, 40, 4, 1, true), 100),
        ((2, 16, 9, 9, 1, 4, 1, false), 110),
        ((2, 32, 8, 8, 32, 8, 2, true), 120),
    ] {
        for shape in [AddendShape::None, AddendShape::PerPlane, AddendShape::Whole, AddendShape::PerChannel] {
            for left in [true, false] {
                check::<f32>(case, (shape, left), seed);
                check::<f64>(case, (shape, left), seed);
            }
        }
    }
}

/// Empty images (a side of 0, or no channels) in a padding the kernel fits
/// in: no statistics to take, and the output is the bias alone, as from
/// the separate ops.
#[test]
fn group_norm_silu_conv2d_of_empty_images_is_the_bias() {
    for (c, h, w, groups) in [(4, 0, 3, 2), (0, 3, 3, 1)] {
        let x = Tensor::<f64>::zeros(&[2, c, h, w]);
        let (nw, nb) = (randn(&[c], 140), randn(&[c], 141));
        let (cw, cb) = (randn(&[3, c, 1, 1], 142), randn(&[3], 143));
        let norm = GroupNormSilu { groups, weight: &nw, bias: &nb, eps: 1e-5 };
        let fused = x.group_norm_silu_conv2d(&norm, &cw, Some(&cb), (1, 1), None).unwrap();
        let twin = x.group_norm_silu(groups, &nw, &nb, 1e-5).unwrap().conv2d(&cw, Some(&cb), 1, 1).unwrap();
        let plane = fused.dims()[2] * fused.dims()[3];
        let bias: Vec<f64> = (0..fused.elem_count()).map(|i| cb.to_vec()[i / plane % 3]).collect();
        assert_eq!((fused.to_vec(), twin.to_vec()), (bias.clone(), bias), "{c} x {h} x {w}");
    }
}

/// Bad shapes are refused by the op that would have refused them.
#[test]
fn group_norm_silu_conv2d_names_what_is_wrong() {
    let (x, nw, nb) = (randn(&[2, 6, 4, 4], 130), randn(&[6], 131), randn(&[6], 132));
    let norm = GroupNormSilu { groups: 4, weight: &nw, bias: &nb, eps: 1e-5 };
    let err = x.group_norm_silu_conv2d(&norm, &randn(&[3, 6, 3, 3], 133), None, (1, 1), None).unwrap_err().to_string();
    assert!(err.contains("group_norm") && err.contains("6 channels do not split into 4 groups"), "{err}");
    let norm = GroupNormSilu { groups: 3, ..norm };
    let err = x.group_norm_silu_conv2d(&norm, &randn(&[3, 5, 3, 3], 134), None, (1, 1), None).unwrap_err().to_string();
    assert!(err.contains("conv2d") && err.contains("has 6 channels but weight [3, 5, 3, 3] expects 5"), "{err}");
    let err = x
        .group_norm_silu_conv2d(&norm, &randn(&[3, 6, 3, 3], 135), None, (1, 1), Some(Addend::Right(&randn(&[2, 3, 5], 136))))
        .unwrap_err()
        .to_string();
    assert!(err.contains("add") && err.contains("[2, 3, 4, 4]") && err.contains("[2, 3, 5]"), "{err}");
}

#[test]
fn gradients_accumulate_over_uses() {
    // L = sum(x * x + x): dL/dx = 2x + 1, with x used three times.
    let x = Tensor::from_vec(vec![1.0, -2.0, 0.5], &[3]).unwrap().requires_grad();
    let loss = x.mul(&x).unwrap().add(&x).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec(), vec![3.0, -3.0, 2.0]);
}

#[test]
fn detach_and_no_grad_stop_gradients() {
    let x = randn(&[3], 80).requires_grad();
    let y = x.detach().mul(&x).unwrap().sum_all().unwrap(); // d/dx (c x) = c
    let g = y.backward().unwrap();
    assert!(g.get(&x).unwrap().allclose(&x.detach(), 0.0));
    let z = tensor::no_grad(|| x.exp());
    assert!(!z.requires_grad_flag() && z.op().is_none());
}

#[test]
fn long_chain_backward_does_not_overflow_the_stack() {
    // 20,000 ops deep: the topological sort is iterative.
    let x = Tensor::from_vec(vec![0.5f64], &[1]).unwrap().requires_grad();
    let mut y = x.clone();
    for _ in 0..20_000 {
        y = y.affine(1.0, 1e-4);
    }
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec(), vec![1.0]);
}

#[test]
fn kinks_take_the_documented_subgradient() {
    // Finite differences cannot see a kink, so each convention is pinned at the kink
    // itself: relu'(0) = 0 and |x|'(0) = 0 (PyTorch's choice), and a tie in maximum
    // splits the gradient evenly between the two inputs.
    let grad = |f: &dyn Fn(&Tensor<f64>) -> Tensor<f64>, x: &[f64]| {
        let x = Tensor::from_vec(x.to_vec(), &[x.len()]).unwrap().requires_grad();
        f(&x).sum_all().unwrap().backward().unwrap().get(&x).unwrap().to_vec()
    };
    assert_eq!(grad(&|x| x.relu(), &[-1.0, 0.0, 2.0]), vec![0.0, 0.0, 1.0]);
    assert_eq!(grad(&|x| x.abs(), &[-1.0, 0.0, 2.0]), vec![-1.0, 0.0, 1.0]);

    let a = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap().requires_grad();
    let b = Tensor::from_vec(vec![0.0, 2.0, 4.0], &[3]).unwrap().requires_grad();
    let grads = a.maximum(&b).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.get(&a).unwrap().to_vec(), vec![1.0, 0.5, 0.0]);
    assert_eq!(grads.get(&b).unwrap().to_vec(), vec![0.0, 0.5, 1.0]);
}

#[test]
fn group_norm_of_an_image_with_no_pixels_has_empty_and_zero_gradients() {
    // H = 0: every group holds no element. The forward and both backward rules
    // (plain and fused with silu) must return empty x-gradients and zero
    // weight and bias gradients, not split the data into chunks of size 0.
    for silu in [false, true] {
        let x = Tensor::<f64>::zeros(&[2, 4, 0, 3]).requires_grad();
        let (w, b) = (randn(&[4], 81).requires_grad(), randn(&[4], 82).requires_grad());
        let y = if silu { x.group_norm_silu(2, &w, &b, 1e-5) } else { x.group_norm(2, &w, &b, 1e-5) }.unwrap();
        assert_eq!(y.dims(), &[2, 4, 0, 3]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(grads.get(&x).unwrap().dims(), &[2, 4, 0, 3], "silu = {silu}");
        assert_eq!(grads.get(&w).unwrap().to_vec(), vec![0.0; 4], "silu = {silu}");
        assert_eq!(grads.get(&b).unwrap().to_vec(), vec![0.0; 4], "silu = {silu}");
    }
}
