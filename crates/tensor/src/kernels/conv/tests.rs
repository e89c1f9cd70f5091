//! Conv tests: the im2col + GEMM passes against the direct seven-loop
//! definitions, over odd geometries, f32 and f64, outputs poisoned with NaN.
//!
//! Each output is a sum of R (forward, grad input) or N * L (grad weight)
//! products, so, as for the GEMM, it is checked against the f64 oracle
//! within [`TestScalar::tolerance`]`(terms, sum |products|)`, the sum computed
//! by the same oracle on absolute values.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::implicit::{pad_chw_phases, pad_hwc, Im2col, Im2colInPlace, Im2row, PaddedGeometry};
use super::*;
use crate::kernels::gemm::{with_best, DirectB, MaskedRuns, PackB, SEGMENT};
use crate::kernels::test_scalar::TestScalar;

/// N in {1, 3}, C in {1, 3, 5}, H x W in {1x1, 5x7, 7x5, 28x28}, kernels
/// 1x1, 3x3, 2x3, stride 1, 2, 3, padding 0, 1, 2; those where the kernel fits.
fn geometries() -> Vec<Conv2dGeometry> {
    let mut out = Vec::new();
    for n in [1, 3] {
        for c in [1, 3, 5] {
            for (h, w) in [(1, 1), (5, 7), (7, 5), (28, 28)] {
                for (kh, kw) in [(1, 1), (3, 3), (2, 3)] {
                    for stride in [1, 2, 3] {
                        for padding in [0, 1, 2] {
                            if h + 2 * padding < kh || w + 2 * padding < kw {
                                continue;
                            }
                            let k = 1 + (out.len() % 4);
                            out.push(Conv2dGeometry { n, c, h, w, k, kh, kw, stride, padding });
                        }
                    }
                }
            }
        }
    }
    // Channel counts that fill whole micro-panel rows of the weight-gradient
    // packing (`Im2row`'s fixed-length copies), and a batch above the
    // weight-gradient chunk.
    for (c, stride) in [(16, 1), (16, 2), (8, 1)] {
        out.push(Conv2dGeometry { n: 5, c, h: 6, w: 7, k: 5, kh: 3, kw: 3, stride, padding: 1 });
    }
    // Weight gradients of few columns (dot products, `weight_grad_thin`) over
    // a batch above the weight-gradient chunk, and at the largest such R.
    for (c, stride) in [(1, 1), (3, 2)] {
        out.push(Conv2dGeometry { n: 6, c, h: 9, w: 11, k: 5, kh: 3, kw: 3, stride, padding: 1 });
    }
    out.push(Conv2dGeometry { n: 2, c: 31, h: 5, w: 4, k: 3, kh: 1, kw: 1, stride: 1, padding: 1 });
    // Pointwise (its grad weight multiplies by the image channels last,
    // unpacked): a batch over two weight-gradient chunks, a column block and
    // a part of one, a short last tile of rows.
    out.push(Conv2dGeometry { n: 6, c: 40, h: 9, w: 7, k: 13, kh: 1, kw: 1, stride: 1, padding: 0 });
    // ... and an image too large for that (553 KB channels last, over a
    // quarter of a 2 MiB L2), packed instead.
    out.push(Conv2dGeometry { n: 5, c: 64, h: 48, w: 45, k: 7, kh: 1, kw: 1, stride: 1, padding: 0 });
    out.push(Conv2dGeometry { n: 2, c: 1, h: 7, w: 6, k: 3, kh: 4, kw: 7, stride: 1, padding: 2 });
    // Products that span several `kc` blocks with B read in place (see
    // `gemm/direct.rs`): R = 288 rows of the im2col matrix, L = 784 rows of
    // the weight gradient's, channels a multiple of 16.
    out.push(Conv2dGeometry { n: 2, c: 32, h: 28, w: 28, k: 5, kh: 3, kw: 3, stride: 1, padding: 1 });
    // The quick UNet's downsampling convolutions (3x3, stride 2, padding 1:
    // 16 channels 28 -> 14, 32 channels 14 -> 7, the forward reading the
    // phase planes in place), and an odd side whose last phase row and
    // column are past the padded image.
    for (c, side) in [(16, 28), (32, 14), (16, 13)] {
        out.push(Conv2dGeometry { n: 2, c, h: side, w: side, k: c, kh: 3, kw: 3, stride: 2, padding: 1 });
    }
    // Winograd (`winograd.rs`: 3x3, stride 1, padding 1, at least 32
    // channels in and out; the weight gradient from 14 x 14 on, F(2x2, 3x3)):
    // odd and even sides (tiles past the edge), one-pixel and one-tile
    // images, batches that span several groups of images (7 x 7: four a
    // group) and several weight-gradient chunks, GEMMs with more than one A~
    // and B~ micro-panel.
    // F(4x4, 3x3) in the forward and grad input where both sides are 4 j or
    // 4 j + 3 (7 x 7 above; 28 x 28 over two groups of images, a side with a
    // tile past the edge, one tile, 16 channels and a tail of one).
    for (n, c, h, w, k) in [
        (6, 64, 7, 7, 65),
        (5, 65, 6, 5, 64),
        (3, 64, 1, 1, 64),
        (1, 64, 3, 2, 70),
        (5, 64, 15, 14, 64),
        (2, 72, 14, 17, 64),
        (3, 32, 28, 28, 33),
        (2, 33, 8, 11, 48),
        (4, 32, 3, 4, 32),
    ] {
        out.push(Conv2dGeometry { n, c, h, w, k, kh: 3, kw: 3, stride: 1, padding: 1 });
    }
    out
}

fn random<T: TestScalar>(len: usize, rng: &mut ChaCha8Rng) -> Vec<T> {
    (0..len).map(|_| T::from_f64(rng.random_range(-1.0..1.0))).collect()
}

fn to_f64<T: TestScalar>(v: &[T]) -> Vec<f64> {
    v.iter().map(|&x| x.to_f64()).collect()
}

fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

/// `got` against `want` within [`TestScalar::tolerance`]`(terms, bound)` element-wise.
fn assert_close<T: TestScalar>(what: &str, g: &Conv2dGeometry, got: &[T], want: &[f64], bound: &[f64], terms: usize) {
    for (idx, ((&got, &want), &bound)) in got.iter().zip(want).zip(bound).enumerate() {
        let tol = T::tolerance(terms, bound);
        let got = got.to_f64();
        assert!((got - want).abs() <= tol, "{what} {g:?}: element {idx} = {got}, oracle {want}, tolerance {tol}");
    }
}

fn check_geometry<T: TestScalar>(g: &Conv2dGeometry, rng: &mut ChaCha8Rng) {
    let (l, r) = (g.out_h() * g.out_w(), g.c * g.kh * g.kw);
    let x: Vec<T> = random(g.n * g.c * g.h * g.w, rng);
    let weight: Vec<T> = random(g.k * r, rng);
    let bias: Vec<T> = random(g.k, rng);
    let grad_out: Vec<T> = random(g.n * g.k * l, rng);
    let (x64, w64, b64, dout64) = (to_f64(&x), to_f64(&weight), to_f64(&bias), to_f64(&grad_out));
    let nan = T::from_f64(f64::NAN);

    // forward, with and without bias
    for with_bias in [true, false] {
        let bias_t = with_bias.then_some(&bias[..]);
        let mut out = vec![nan; g.n * g.k * l];
        conv2d_forward(g, &x, &weight, bias_t, &mut out);
        let mut want = vec![f64::NAN; out.len()];
        conv2d_forward_naive(g, &x64, &w64, with_bias.then_some(&b64[..]), &mut want);
        let mut bound = vec![0.0; out.len()];
        conv2d_forward_naive(g, &abs(&x64), &abs(&w64), with_bias.then_some(&abs(&b64)[..]), &mut bound);
        assert_close("conv2d_forward", g, &out, &want, &bound, r + 1);
    }

    // grad input
    let mut grad_x = vec![nan; x.len()];
    conv2d_backward_input(g, &grad_out, &weight, &mut grad_x);
    let mut want = vec![f64::NAN; x.len()];
    conv2d_backward_input_naive(g, &dout64, &w64, &mut want);
    let mut bound = vec![0.0; x.len()];
    conv2d_backward_input_naive(g, &abs(&dout64), &abs(&w64), &mut bound);
    assert_close("conv2d_backward_input", g, &grad_x, &want, &bound, g.k * g.kh * g.kw);

    // grad weight and bias
    let mut grad_w = vec![nan; weight.len()];
    let mut grad_b = vec![nan; g.k];
    conv2d_backward_weight(g, &x, &grad_out, &mut grad_w, Some(&mut grad_b));
    let (mut want_w, mut want_b) = (vec![f64::NAN; weight.len()], vec![f64::NAN; g.k]);
    conv2d_backward_weight_naive(g, &x64, &dout64, &mut want_w, Some(&mut want_b));
    let (mut bound_w, mut bound_b) = (vec![0.0; weight.len()], vec![0.0; g.k]);
    conv2d_backward_weight_naive(g, &abs(&x64), &abs(&dout64), &mut bound_w, Some(&mut bound_b));
    if winograd::applies_to_weight_grad(g) {
        let (bound_w, terms) = winograd_weight_bound(g, &x64, &dout64);
        assert_close("conv2d_backward_weight (weight, Winograd)", g, &grad_w, &want_w, &bound_w, terms);
    } else {
        assert_close("conv2d_backward_weight (weight)", g, &grad_w, &want_w, &bound_w, g.n * l);
    }
    assert_close("conv2d_backward_weight (bias)", g, &grad_b, &want_b, &bound_b, g.n * l);
}

/// The error bound of the Winograd weight gradient, for each weight, and its
/// number of terms. Its sums are not those of the definition: the product of
/// position `pos` of a tile's `A dY A^T` (a signed sum of the tile's 2 x 2
/// output gradients) and of its `B^T d B` (of the 4 x 4 input values) holds
/// every pair of an output gradient and an input value of the tile, most of
/// which cancel exactly, but round. So a weight's bound is 9 (the entries of
/// `dU` that `G^T dU G` combines, with coefficients of at most 1) times the
/// sum over tiles of `(sum |dy|) (sum |d|)`, the same for the 9 weights of a
/// filter, over one sum per tile plus the transforms' 16.
fn winograd_weight_bound(g: &Conv2dGeometry, x: &[f64], dout: &[f64]) -> (Vec<f64>, usize) {
    let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
    let mut bound = vec![0.0; g.k * g.c * 9];
    for n in 0..g.n {
        for ty in 0..th {
            for tx in 0..tw {
                let mut dy_sum = vec![0.0; g.k];
                for (k, sum) in dy_sum.iter_mut().enumerate() {
                    for (y, xx) in [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(a, b)| (2 * ty + a, 2 * tx + b)) {
                        if y < g.h && xx < g.w {
                            *sum += dout[((n * g.k + k) * g.h + y) * g.w + xx].abs();
                        }
                    }
                }
                for c in 0..g.c {
                    let mut d_sum = 0.0;
                    for r in 0..4 {
                        for s in 0..4 {
                            d_sum += input_at(g, x, n, c, 2 * ty + r, 2 * tx + s).map_or(0.0, f64::abs);
                        }
                    }
                    for (k, &dy) in dy_sum.iter().enumerate() {
                        for tap in 0..9 {
                            bound[(k * g.c + c) * 9 + tap] += 9.0 * dy * d_sum;
                        }
                    }
                }
            }
        }
    }
    (bound, g.n * th * tw + 16)
}

#[test]
fn f32_matches_naive() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for g in geometries() {
        check_geometry::<f32>(&g, &mut rng);
    }
}

/// The same on every other kernel this CPU has, as if it were the best: a CPU
/// without AVX-512 packs the images where this one reads them in place (the
/// direct 3 x 3 kernel, Winograd's unpacked products), and only this test runs
/// that packing here. One thread (the override is the thread's).
#[test]
fn f32_matches_naive_with_every_kernel() {
    for kernel in Kernel::ALL.into_iter().filter(|k| k.available() && *k != Kernel::best()) {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        with_best(kernel, || {
            for g in geometries() {
                check_geometry::<f32>(&g, &mut rng);
            }
        });
    }
}

#[test]
fn f64_matches_naive() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for g in geometries() {
        check_geometry::<f64>(&g, &mut rng);
    }
}

/// Empty images (a side of 0, or no channels) inside a padding the kernel
/// fits in: every output is its channel's bias (0 without one), in place of
/// the NaN the output was poisoned with; the naive forward agrees.
#[test]
fn empty_images_give_the_bias() {
    for (c, h, w) in [(4, 0, 3), (0, 5, 5), (2, 3, 0)] {
        let g = Conv2dGeometry { n: 2, c, h, w, k: 3, kh: 1, kw: 1, stride: 1, padding: 1 };
        let (weight, bias) = (vec![0.5f64; 3 * c], [1.5, -2.0, 0.25]);
        for bias in [Some(&bias[..]), None] {
            let mut out = vec![f64::NAN; 2 * 3 * g.out_h() * g.out_w()];
            conv2d_forward(&g, &vec![0.0; 2 * c * h * w], &weight, bias, &mut out);
            let mut want = vec![f64::NAN; out.len()];
            conv2d_forward_naive(&g, &vec![0.0; 2 * c * h * w], &weight, bias, &mut want);
            let plane = g.out_h() * g.out_w();
            for (i, (&got, &want)) in out.iter().zip(&want).enumerate() {
                let expected = bias.map_or(0.0, |b| b[i / plane % 3]);
                assert_eq!((got, want), (expected, expected), "{g:?}, bias {}: element {i}", bias.is_some());
            }
        }
    }
}

/// The naive forward on a case small enough to do by hand: a 2x2 all-ones
/// kernel over a 3x3 ramp, padding 0, stride 1, bias 0.5.
#[test]
fn naive_forward_by_hand() {
    let g = Conv2dGeometry { n: 1, c: 1, h: 3, w: 3, k: 1, kh: 2, kw: 2, stride: 1, padding: 0 };
    let x: Vec<f64> = (1..=9).map(f64::from).collect();
    let mut out = [0.0; 4];
    conv2d_forward_naive(&g, &x, &[1.0; 4], Some(&[0.5]), &mut out);
    // 1+2+4+5, 2+3+5+6, 4+5+7+8, 5+6+8+9, each + 0.5
    assert_eq!(out, [12.5, 16.5, 24.5, 28.5]);
}

/// Every pass gives the same bits on 1, 2 or 3 threads (the weight
/// gradient sums images in fixed chunks, added in a fixed order).
/// The second geometry takes the Winograd path in every pass.
#[test]
fn results_do_not_depend_on_thread_count() {
    for g in [
        Conv2dGeometry { n: 13, c: 3, h: 9, w: 9, k: 8, kh: 3, kw: 3, stride: 1, padding: 1 },
        Conv2dGeometry { n: 9, c: 64, h: 14, w: 14, k: 64, kh: 3, kw: 3, stride: 1, padding: 1 },
    ] {
        same_bits_on_1_2_3_threads(&g);
    }
}

fn same_bits_on_1_2_3_threads(g: &Conv2dGeometry) {
    let g = *g;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<f32> = random(g.n * g.c * g.h * g.w, &mut rng);
    let weight: Vec<f32> = random(g.k * g.c * 9, &mut rng);
    let grad_out: Vec<f32> = random(g.n * g.k * g.out_h() * g.out_w(), &mut rng);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut out = vec![0.0f32; grad_out.len()];
            let mut grad_x = vec![0.0f32; x.len()];
            let mut grad_w = vec![0.0f32; weight.len()];
            let mut grad_b = vec![0.0f32; g.k];
            conv2d_forward(&g, &x, &weight, None, &mut out);
            conv2d_backward_input(&g, &grad_out, &weight, &mut grad_x);
            conv2d_backward_weight(&g, &x, &grad_out, &mut grad_w, Some(&mut grad_b));
            [out, grad_x, grad_w, grad_b].map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

/// The fused forward equals its three steps done one after the other (the
/// input mapped into a buffer, the forward, the output updated), bit for
/// bit, NaN-poisoned outputs overwritten: with the input map, the output
/// update, both and neither; on the Winograd path (odd sides, groups of
/// images, channels past a strip of 16, maps that differ per image and
/// channel) and off it (too few channels, stride 2, 1x1); with and without
/// a bias; f32 and f64.
#[test]
fn fused_forward_equals_its_steps_one_after_the_other() {
    fn check<T: TestScalar>(g: &Conv2dGeometry, rng: &mut ChaCha8Rng) {
        let (hw, l) = (g.h * g.w, g.out_h() * g.out_w());
        let x: Vec<T> = random(g.n * g.c * hw, rng);
        let weight: Vec<T> = random(g.k * g.c * g.kh * g.kw, rng);
        let bias: Vec<T> = random(g.k, rng);
        let (scale, shift): (Vec<T>, Vec<T>) = (random(g.n * g.c, rng), random(g.n * g.c, rng));
        let addend: Vec<T> = random(g.n * g.k * l, rng);
        // An affine map per plane, then a kink (as SiLU would be): nothing
        // the plain forward could reproduce by reading the planes in another order.
        let value = |i: usize, v: T| {
            let y = v * scale[i] + shift[i];
            if y.to_f64() < 0.0 {
                y * T::from_f64(0.25)
            } else {
                y
            }
        };
        let map = |i: usize, plane: &[T], mapped: &mut [T]| {
            for (m, &v) in mapped.iter_mut().zip(plane) {
                *m = value(i, v);
            }
        };
        // Each output plane halved, then its own addend added.
        let update = |i: usize, plane: &mut [T]| {
            for (o, &a) in plane.iter_mut().zip(&addend[i * l..]) {
                *o = *o * T::HALF + a;
            }
        };
        for (with_map, with_update, bias) in
            [(true, true, Some(&bias[..])), (true, false, None), (false, true, Some(&bias[..])), (false, false, None)]
        {
            let input = if with_map { x.iter().enumerate().map(|(j, &v)| value(j / hw.max(1), v)).collect() } else { x.clone() };
            let mut want = vec![T::from_f64(f64::NAN); g.n * g.k * l];
            conv2d_forward(g, &input, &weight, bias, &mut want);
            if with_update {
                want.chunks_exact_mut(l).enumerate().for_each(|(i, plane)| update(i, plane));
            }
            let mut got = vec![T::from_f64(f64::NAN); want.len()];
            let fused =
                Fused { input: with_map.then_some(&map as PlaneMap<'_, T>), output: with_update.then_some(&update as PlaneUpdate<'_, T>) };
            conv2d_forward_fused(g, &x, fused, &weight, bias, &mut got);
            let bits = |v: &[T]| v.iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{g:?}, map {with_map}, update {with_update}, bias {}", bias.is_some());
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for (n, c, h, w, k, kh, stride) in [
        (6, 64, 7, 7, 65, 3, 1),
        (3, 33, 15, 14, 32, 3, 1),
        (2, 48, 28, 28, 32, 3, 1),
        (3, 16, 9, 8, 5, 3, 1),
        (2, 32, 9, 9, 32, 3, 2),
        (2, 5, 6, 7, 4, 1, 1),
    ] {
        let g = Conv2dGeometry { n, c, h, w, k, kh, kw: kh, stride, padding: kh / 2 };
        assert_eq!(winograd::applies(&g), c >= 32 && stride == 1, "{g:?}");
        check::<f32>(&g, &mut rng);
        check::<f64>(&g, &mut rng);
    }
}

#[test]
#[should_panic(expected = "conv2d_forward: out has 3 elements")]
fn wrong_output_length_panics() {
    let g = Conv2dGeometry { n: 1, c: 1, h: 2, w: 2, k: 1, kh: 1, kw: 1, stride: 1, padding: 0 };
    conv2d_forward(&g, &[0.0f32; 4], &[1.0], None, &mut [0.0; 3]);
}

/// The implicit im2col matrices, packed for every micro-panel width, equal
/// the matrices written out from their definitions (the naive twins), with
/// the packed buffers poisoned with NaN and zero columns past the last
/// real one. `cols` is in padded coordinates:
/// `cols[(c*KH + i)*KW + j, oh*WP + ow] = xpad[c, oh + i, ow + j]` at
/// stride 1 (junk past the padded image reads the zero slack), and at
/// stride S the same over the phase planes, `cols[.., oh*WQ + ow] = xpad[c,
/// S*oh + i, S*ow + j]`; and
/// `rows[oh*OW + ow, (i*KW + j)*C + c] = xpad[c, oh*S + i, ow*S + j]`.
#[test]
fn implicit_packing_matches_the_definitions() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for (c, stride) in [(3, 1), (16, 1), (5, 2), (16, 2)] {
        let (h, w, kh, kw, p) = (5, 6, 3, 2, 1);
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let pg = PaddedGeometry { c, hp, wp, kh, kw, stride, out_h: (hp - kh) / stride + 1, out_w: (wp - kw) / stride + 1 };
        let x: Vec<f64> = random(c * h * w, &mut rng);
        let xpad_at = |ci: usize, y: usize, xx: usize| {
            let inside = (p..p + h).contains(&y) && (p..p + w).contains(&xx);
            if inside {
                x[(ci * h + y - p) * w + xx - p]
            } else {
                0.0
            }
        };
        let tap = |r: usize| (r / (kh * kw), r % (kh * kw) / kw, r % kw);
        // (a block of) a matrix packed with width nr against `at(row, col)`
        let check = |b: &dyn PackB<f64>, at: &dyn Fn(usize, usize) -> f64, what: &str| {
            let (k, n) = (b.rows(), b.cols());
            for nr in [4, 8, 16, 32] {
                for (pc, kc, jc, nc) in [(0, k, 0, n), (1, k - 2, 3, n - 5)] {
                    let mut dst = vec![f64::NAN; nc.div_ceil(nr) * kc * nr];
                    b.pack_b(pc, kc, jc, nc, nr, &mut dst);
                    for (idx, &got) in dst.iter().enumerate() {
                        let (panel, row, col) = (idx / (kc * nr), idx % (kc * nr) / nr, idx % nr);
                        let j = panel * nr + col;
                        let want = if j < nc { at(pc + row, jc + j) } else { 0.0 };
                        assert_eq!(got, want, "{what} c {c} stride {stride} nr {nr} element {idx}");
                    }
                }
            }
        };

        let mut xhwc = vec![f64::NAN; hp * wp * c];
        pad_hwc(&x, (c, h, w), p, (hp, wp), &mut xhwc);
        let rows = Im2row { xhwc: &xhwc, g: pg };
        let rows_at = |q: usize, r: usize| {
            let (ij, ci) = (r / c, r % c);
            let (oh, ow) = (q / pg.out_w, q % pg.out_w);
            xpad_at(ci, oh * stride + ij / kw, ow * stride + ij % kw)
        };
        check(&rows, &rows_at, "Im2row");

        // The padded image at stride 1, its S x S phase planes at stride S:
        // plane (c, a, b) holds the padded pixels (S y + a, S x + b), zero
        // past the padded image.
        let (hq, wq) = (hp.div_ceil(stride), wp.div_ceil(stride));
        let phased_len = c * stride * stride * hq * wq;
        assert_eq!((pg.phase_sides(), pg.phased_len()), ((hq, wq), phased_len));
        let xq_at = |flat: usize| {
            let (plane, y, xx) = (flat / (hq * wq), flat % (hq * wq) / wq, flat % wq);
            let (ci, a, b) = (plane / (stride * stride), plane % (stride * stride) / stride, plane % stride);
            let (y, xx) = (stride * y + a, stride * xx + b);
            if y < hp && xx < wp {
                xpad_at(ci, y, xx)
            } else {
                0.0
            }
        };
        let mut xpad = vec![f64::NAN; phased_len + Im2col::<f64>::slack(&pg)];
        pad_chw_phases(&x, (h, w), p, &pg, &mut xpad);
        for (flat, &v) in xpad[..phased_len].iter().enumerate() {
            assert_eq!(v, xq_at(flat), "pad_chw_phases c {c} stride {stride} element {flat}");
        }
        xpad[phased_len..].fill(0.0);
        let cols = Im2col { xpad: &xpad, g: pg };
        // Row (c, i, j) starts at pixel (i/S, j/S) of plane (c, i%S, j%S), and
        // column q lies q further on (junk past a row's OW outputs; past the
        // planes it is the zero slack). At output (oh, ow), q = oh WQ + ow,
        // that is the padded pixel (S oh + i, S ow + j).
        let cols_at = |r: usize, q: usize| {
            let (ci, i, j) = tap(r);
            let flat = (((ci * stride + i % stride) * stride + j % stride) * hq + i / stride) * wq + j / stride + q;
            if flat >= phased_len {
                0.0
            } else {
                xq_at(flat)
            }
        };
        for (oh, ow) in [(0, 0), (pg.out_h - 1, pg.out_w - 1)] {
            for r in 0..c * kh * kw {
                let (ci, i, j) = tap(r);
                assert_eq!(cols_at(r, oh * wq + ow), xpad_at(ci, stride * oh + i, stride * ow + j), "cols_at");
            }
        }
        assert_eq!(cols.cols(), pg.out_h * wq);
        check(&cols, &cols_at, "Im2col");

        // Read from the image itself at stride 1 (2 P + 1 = KW does not hold
        // for the 2-wide kernel above, so a 3 x 3 one): entry (c, i, j), oh * W + ow
        // is the padded pixel (oh + i, ow + j), and its lane masks say which
        // entries are read, for every panel and every first row.
        if stride == 1 {
            let g = Conv2dGeometry { n: 1, c, h, w, k: 1, kh: 3, kw: 3, stride: 1, padding: p };
            let masks = g.in_place().expect("3 x 3, padding 1").tap_masks();
            let in_place = Im2colInPlace::new(&x, &masks);
            let r = c * 9;
            let in_place_at = |row: usize, q: usize| {
                let (ci, i, j) = (row / 9, row % 9 / 3, row % 3);
                xpad_at(ci, q / w + i, q % w + j)
            };
            assert_eq!((in_place.rows(), in_place.cols()), (r, h * w));
            check(&in_place, &in_place_at, "Im2colInPlace");
            let origin = in_place.origin();
            for col in (0..h * w).step_by(2 * SEGMENT) {
                for pc in [0, 1, r - 1] {
                    let mut offsets = vec![0; r - pc];
                    in_place.row_offsets(pc, &mut offsets);
                    for (p, (mask, offset)) in in_place.lane_masks(pc, col).iter().zip(offsets).enumerate() {
                        for lane in 0..2 * SEGMENT {
                            let q = col + lane;
                            let read = mask[lane / SEGMENT] & (1 << (lane % SEGMENT)) != 0;
                            let value = if read { x[offset + in_place.segment_offset(q) - origin] } else { 0.0 };
                            let want = if q < h * w { in_place_at(pc + p, q) } else { 0.0 };
                            assert_eq!(value, want, "Im2colInPlace c {c} row {} column {q}", pc + p);
                            assert!(!read || q < h * w, "a lane past the last column is read");
                        }
                    }
                }
            }
        }
    }
}

/// A convolution read from the image itself (`Im2colInPlace`, the lane
/// masks of the AVX-512 direct microkernel) gives the bits of the same
/// convolution read from a zero-padded copy (`Im2col`), with and without a
/// bias, at the quick UNet's 16 channels, odd sides, a 2 x 3 kernel, a 1 x 1
/// image, and 64 channels (576 rows: two `kc` blocks). The image lies
/// between NaNs and the output starts as NaN:
/// a masked-off lane that was read, or an output left unwritten, would show.
#[test]
fn in_place_convolution_equals_the_padded_copy_bit_for_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut compared = 0;
    for (c, h, w, k, kh, kw) in [
        (16, 28, 28, 16, 3, 3),
        (16, 14, 14, 16, 3, 3),
        (5, 13, 11, 7, 3, 3),
        (3, 7, 5, 2, 2, 3),
        (2, 1, 1, 3, 3, 3),
        (64, 9, 10, 20, 3, 3),
    ] {
        let g = Conv2dGeometry { n: 1, c, h, w, k, kh, kw, stride: 1, padding: 1 };
        let (chw, l, r) = (c * h * w, g.l(), g.r());
        let surround = 3 * w + 40;
        let mut buffer = vec![f32::NAN; surround + chw + surround];
        buffer[surround..surround + chw].copy_from_slice(&random::<f32>(chw, &mut rng));
        let x = &buffer[surround..surround + chw];
        let (weight, bias) = (random::<f32>(k * r, &mut rng), random::<f32>(k, &mut rng));
        let packed = PackedA::new(Kernel::best(), row_major(&weight, k, r));
        if !packed.reads_b_in_place() {
            eprintln!(
                "in_place_convolution_equals_the_padded_copy_bit_for_bit: skipped, {} has no direct microkernel",
                Kernel::best().name()
            );
            return;
        }
        let masks = g.in_place().expect("a stride-1 convolution with 2P + 1 = KW").tap_masks();
        let pg = g.padded();
        let mut xpad = vec![f32::NAN; pg.phased_len() + Im2col::<f32>::slack(&pg)];
        pad_chw_phases(x, (h, w), 1, &pg, &mut xpad);
        xpad[pg.phased_len()..].fill(0.0);
        for bias in [Some(&bias[..]), None] {
            let (mut in_place, mut padded) = (vec![f32::NAN; k * l], vec![f32::NAN; k * l]);
            conv_in_place(&packed, &Im2colInPlace::new(x, &masks), bias, Threading::Single, &mut in_place);
            conv_padded(&packed, &xpad, pg, bias, Threading::Single, &mut padded);
            for (idx, (a, b)) in in_place.iter().zip(&padded).enumerate() {
                assert!(a.is_finite(), "{g:?} bias {}: element {idx} = {a}", bias.is_some());
                assert_eq!(a.to_bits(), b.to_bits(), "{g:?} bias {}: element {idx}: {a} in place, {b} padded", bias.is_some());
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 12);
}

/// `pad_hwc` into frames exactly the padded size and larger (Winograd's odd
/// sides), with 0-2 pixels of padding, f32 through the 16 x 16 blocks (16
/// and 32 channels, 28 x 28 images) and their edges (3 channels, 7 x 5),
/// into a NaN-poisoned buffer longer than the frame: each pixel of the
/// image lands at row and column P of the frame, channels last, and every
/// other element is zero.
#[test]
fn pad_hwc_fills_the_frame() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (c, h, w) in [(16, 28, 28), (32, 7, 5), (3, 7, 5), (32, 1, 1)] {
        for (p, extra) in [(0, 0), (1, 0), (1, 1), (2, 3)] {
            let (fh, fw) = (h + 2 * p + extra, w + 2 * p + extra);
            let x: Vec<f32> = random(c * h * w, &mut rng);
            let mut frame = vec![f32::NAN; fh * fw * c + 7];
            pad_hwc(&x, (c, h, w), p, (fh, fw), &mut frame);
            for (idx, &got) in frame.iter().enumerate() {
                let (pixel, ci) = (idx / c, idx % c);
                let (y, xx) = (pixel / fw, pixel % fw);
                let inside = idx < fh * fw * c && (p..p + h).contains(&y) && (p..p + w).contains(&xx);
                let want = if inside { x[(ci * h + y - p) * w + xx - p] } else { 0.0 };
                assert_eq!(got.to_bits(), want.to_bits(), "c {c} {h}x{w} p {p} frame {fh}x{fw}: element {idx}");
            }
        }
    }
}

/// Which passes take Winograd at the UNets' 3x3 shapes (batch 64): all at 28
/// x 28 x 32 and 14 x 14 x 64, forward and grad input at 7 x 7; none with 16
/// channels in or out (the quick UNet's 28 x 28 level), with stride 2 or a
/// 1x1 kernel.
#[test]
fn winograd_where_it_pays() {
    let g = |c: usize, hw: usize, k: usize| Conv2dGeometry { n: 64, c, h: hw, w: hw, k, kh: 3, kw: 3, stride: 1, padding: 1 };
    assert_eq!(uses_winograd(&g(32, 28, 32)), (true, true));
    assert_eq!(uses_winograd(&g(64, 14, 64)), (true, true));
    assert_eq!(uses_winograd(&g(128, 14, 64)), (true, true));
    assert_eq!(uses_winograd(&g(64, 7, 64)), (true, false));
    assert_eq!(uses_winograd(&g(32, 7, 32)), (true, false));
    assert_eq!(uses_winograd(&g(64, 14, 32)), (true, true));
    assert_eq!(uses_winograd(&g(16, 28, 16)), (false, false));
    assert_eq!(uses_winograd(&g(16, 14, 32)), (false, false));
    assert_eq!(uses_winograd(&g(32, 28, 31)), (false, false));
    assert_eq!(uses_winograd(&Conv2dGeometry { stride: 2, ..g(64, 14, 64) }), (false, false));
    assert_eq!(uses_winograd(&Conv2dGeometry { kh: 1, kw: 1, padding: 0, ..g(64, 14, 64) }), (false, false));
}

/// The weight gradient's partial sums, added block by block on the threads,
/// give every element the same bits as the serial loop `p_0 + p_1 + ...` in
/// chunk order: f32 values of mixed magnitude (so the order shows in the
/// rounding), a part that is no whole number of blocks, and sizes below and
/// above the threaded one.
#[test]
fn partial_sums_match_the_serial_chunk_order_bit_for_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for (part, count) in [(3, 4), (PARTIAL_SUM_BLOCK * 2 + 17, 16), (PARTIAL_SUM_BLOCK - 1, 2)] {
        let partials: Vec<f32> = (0..part * count).map(|_| rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-3..4))).collect();
        let mut serial = partials[..part].to_vec();
        for partial in partials[part..].chunks_exact(part) {
            for (s, &p) in serial.iter_mut().zip(partial) {
                *s += p;
            }
        }
        let mut buffer = partials.clone();
        let sum = add_partials_in_order(&mut buffer, part);
        assert_eq!(sum.len(), part);
        for (i, (a, b)) in sum.iter().zip(&serial).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "part {part}, {count} partials: element {i}");
        }
        assert_eq!(buffer[part..], partials[part..], "the partials after the first are only read");
        let threaded = (count - 1) * part >= PARALLEL_PARTIAL_SUM_MIN;
        assert_eq!(threaded, part > PARTIAL_SUM_BLOCK * 2, "one case on each side of the threaded size");
    }
}
