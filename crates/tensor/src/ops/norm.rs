//! Group normalisation (Wu & He 2018), the normalisation of the DDPM UNet.
//!
//! Shapes: `x` `[N, C, *]` (any trailing spatial axes, `S` elements per channel),
//! `weight` and `bias` `[C]`. The `C` channels are split into `G` groups of `C/G`;
//! each (sample, group) block of `M = (C/G) S` elements is normalised by its own
//! mean and (biased) variance, then scaled and shifted per channel:
//!
//! `y = (x - mean) * rstd * weight[c] + bias[c]`, `rstd = 1 / sqrt(var + eps)`.
//!
//! The fused forward and backward below are what the model runs;
//! [`group_norm_composed`] builds the same function from primitives and a test
//! holds the two equal (values and gradients).

use crate::element::Float;
use crate::error::{Error, Result};
use crate::kernels::conv::{conv2d_forward_fused, Fused, PlaneUpdate};
use crate::kernels::elementwise::{fold_lanes, map_into, vectorized, zip_assign, zip_into};
use crate::kernels::gemm::scratch::with_scratch;
use crate::op::Op;
use crate::ops::conv::geometry as conv_geometry;
use crate::ops::unary::{silu_chain, silu_scalar};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::sync::Arc;

/// `(N, C, S, C/G)` of an `x` that `check` accepted: batch, channels, elements
/// per channel, channels per group.
fn sizes<T: Float>(x: &Tensor<T>, groups: usize) -> (usize, usize, usize, usize) {
    let (n, c) = (x.dims()[0], x.dims()[1]);
    (n, c, x.elem_count() / (n * c).max(1), c / groups)
}

fn check<T: Float>(x: &Tensor<T>, groups: usize, weight: &Tensor<T>, bias: &Tensor<T>) -> Result<(usize, usize, usize)> {
    if x.rank() < 2 {
        return Err(Error::ShapeMismatch { op: "group_norm", msg: format!("x needs shape [N, C, ...], got {:?}", x.dims()) });
    }
    let (n, c) = (x.dims()[0], x.dims()[1]);
    if groups == 0 || c % groups != 0 {
        return Err(Error::InvalidArgument { op: "group_norm", msg: format!("{c} channels do not split into {groups} groups") });
    }
    if weight.dims() != [c] || bias.dims() != [c] {
        return Err(Error::ShapeMismatch {
            op: "group_norm",
            msg: format!("weight {:?} and bias {:?} should both be [{c}] for x {:?}", weight.dims(), bias.dims(), x.dims()),
        });
    }
    let spatial = x.elem_count() / (n * c).max(1);
    Ok((n, c, spatial))
}

impl<T: Float> Tensor<T> {
    /// Group normalisation with `groups` groups and per-channel affine `weight`, `bias`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a rank below 2 or wrong parameter shapes,
    /// [`Error::InvalidArgument`] when `groups` does not divide the channels.
    pub fn group_norm(&self, groups: usize, weight: &Tensor<T>, bias: &Tensor<T>, eps: f64) -> Result<Tensor<T>> {
        let (out, mean, rstd) = group_norm_forward(self, groups, weight, bias, eps, |z| z)?;
        let (x, weight, bias) = (self.clone(), weight.clone(), bias.clone());
        Ok(Tensor::from_op(out, self.dims(), Op::GroupNorm { x, weight, bias, groups, mean, rstd, silu: false }))
    }

    /// `silu(group_norm(x))`, the normalisation and activation that open every
    /// residual block, in one pass over memory: the same values, bit for bit, as
    /// `x.group_norm(..)?.silu()`, without keeping the normalised tensor for the
    /// backward (it is recomputed there from `x` and the saved statistics).
    ///
    /// # Errors
    /// As [`Tensor::group_norm`].
    pub fn group_norm_silu(&self, groups: usize, weight: &Tensor<T>, bias: &Tensor<T>, eps: f64) -> Result<Tensor<T>> {
        let (out, mean, rstd) = group_norm_forward(self, groups, weight, bias, eps, silu_scalar)?;
        let (x, weight, bias) = (self.clone(), weight.clone(), bias.clone());
        Ok(Tensor::from_op(out, self.dims(), Op::GroupNorm { x, weight, bias, groups, mean, rstd, silu: true }))
    }
}

/// The group norm before a convolution in [`Tensor::group_norm_silu_conv2d`]:
/// the arguments of [`Tensor::group_norm_silu`].
#[derive(Clone, Copy, Debug)]
pub struct GroupNormSilu<'a, T: Float> {
    pub groups: usize,
    pub weight: &'a Tensor<T>,
    pub bias: &'a Tensor<T>,
    pub eps: f64,
}

/// A tensor added to the output of [`Tensor::group_norm_silu_conv2d`], and
/// the side of the sum it stands on. The values do not depend on the side
/// (floating-point addition commutes), but with a graph to record the side
/// orders the add op's inputs, so the order in which the backward pass
/// visits the two branches and sums their gradients: the residual block
/// adds its skip path on the left and its time embedding on the right, as
/// its separate ops always did, and trains to the same bits.
#[derive(Clone, Copy, Debug)]
pub enum Addend<'a, T: Float> {
    /// `addend + conv(..)`.
    Left(&'a Tensor<T>),
    /// `conv(..) + addend`.
    Right(&'a Tensor<T>),
}

impl<'a, T: Float> Addend<'a, T> {
    fn tensor(self) -> &'a Tensor<T> {
        match self {
            Addend::Left(t) | Addend::Right(t) => t,
        }
    }
}

impl<T: Float> Tensor<T> {
    /// `x.group_norm_silu(..)?.conv2d(weight, bias, stride, padding)`, then
    /// the addend added if one is given: the opening of every residual block
    /// (the addend its time embedding, `[N, K, 1, 1]`) and its close (the
    /// addend the skip path, `[N, K, OH, OW]`). When no gradient is recorded
    /// (inside [`crate::no_grad`], or no input requires one), only the
    /// statistics are computed here: the convolution normalises each image
    /// as it reads it and adds the addend to each output image while that is
    /// in cache (`kernels::conv::conv2d_forward_fused`), so neither the
    /// normalised activations nor the output before the addition go to
    /// memory and back. The values are the separate ops', bit for bit: the
    /// same per-channel scale and shift, the same SiLU, the same sums. With
    /// a gradient to record, or an addend of another shape, it is the
    /// separate ops.
    ///
    /// Shapes: `self` `[N, C, H, W]`, the norm's weight and bias `[C]`,
    /// `weight` `[K, C, kh, kw]`, `bias` `[K]`, the result `[N, K, OH, OW]`.
    ///
    /// # Errors
    /// As [`Tensor::group_norm`], [`Tensor::conv2d`] and [`Tensor::add`].
    pub fn group_norm_silu_conv2d(
        &self,
        norm: &GroupNormSilu<'_, T>,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        (stride, padding): (usize, usize),
        then_add: Option<Addend<'_, T>>,
    ) -> Result<Tensor<T>> {
        let separate = || {
            let out = self.group_norm_silu(norm.groups, norm.weight, norm.bias, norm.eps)?.conv2d(weight, bias, stride, padding)?;
            match then_add {
                None => Ok(out),
                Some(Addend::Left(addend)) => addend.add(&out),
                Some(Addend::Right(addend)) => out.add(addend),
            }
        };
        let addend = then_add.map(Addend::tensor);
        let inputs = [self, norm.weight, norm.bias, weight].into_iter().chain(bias).chain(addend);
        if crate::is_grad_enabled() && inputs.into_iter().any(Tensor::requires_grad_flag) {
            return separate();
        }
        let (n, c, spatial) = check(self, norm.groups, norm.weight, norm.bias)?;
        let g = conv_geometry(self, weight, bias, stride, padding)?;
        let out_dims = [g.n, g.k, g.out_h(), g.out_w()];
        // The addend is one value a plane, or a plane a plane.
        let addend_run = match addend.map(Tensor::dims) {
            None => 0,
            Some(dims) if dims == [g.n, g.k, 1, 1] => 1,
            Some(dims) if dims == out_dims => g.out_h() * g.out_w(),
            Some(_) => return separate(),
        };
        let per_group = c / norm.groups;
        let x = self.contiguous_data();
        let (w, b) = (norm.weight.contiguous_data(), norm.bias.contiguous_data());
        // Plane n * C + c is normalised by `affines[n * C + c]`: (scale, shift).
        // (Empty images have no blocks, and no planes to map.)
        let mut affines = vec![(T::ZERO, T::ZERO); n * c];
        let block = (per_group * spatial).max(1);
        affines.par_chunks_mut(per_group.max(1)).zip(x.par_chunks(block)).enumerate().for_each(|(ng, (affines, x))| {
            let (mean, rstd) = block_stats(x, norm.eps);
            let first_channel = (ng % norm.groups) * per_group;
            for (j, affine_j) in affines.iter_mut().enumerate() {
                *affine_j = affine(mean, rstd, w[first_channel + j], b[first_channel + j]);
            }
        });
        let normalise = |plane: usize, x: &[T], y: &mut [T]| {
            let (scale, shift) = affines[plane];
            map_into(x, y, |v| silu_scalar(v * scale + shift));
        };
        let addend = addend.map(|a| a.contiguous_data());
        let add = addend.as_deref().map(|addend| {
            move |plane: usize, out: &mut [T]| {
                if addend_run == 1 {
                    let a = addend[plane];
                    vectorized(
                        #[inline(always)]
                        || out.iter_mut().for_each(|o| *o += a),
                    );
                } else {
                    zip_assign(out, &addend[plane * addend_run..][..addend_run], 0, false, |o, a| o + a);
                }
            }
        });
        let fused = Fused { input: Some(&normalise), output: add.as_ref().map(|add| add as PlaneUpdate<'_, T>) };
        let mut out = crate::pool::for_overwrite(out_dims.iter().product());
        let (weight_data, bias_data) = (weight.contiguous_data(), bias.map(|b| b.contiguous_data()));
        conv2d_forward_fused(&g, &x, fused, &weight_data, bias_data.as_deref(), &mut out);
        Tensor::from_vec(out, &out_dims)
    }
}

/// Per-block statistics saved by the forward: mean and 1/std per (sample, group).
type Stats<T> = (Vec<T>, Arc<Vec<T>>, Arc<Vec<T>>);

/// `act(y)` with `y` the group-normalised `x`, and the per-block mean and rstd.
fn group_norm_forward<T: Float>(
    x: &Tensor<T>,
    groups: usize,
    weight: &Tensor<T>,
    bias: &Tensor<T>,
    eps: f64,
    act: impl Fn(T) -> T + Sync,
) -> Result<Stats<T>> {
    let (n, c, spatial) = check(x, groups, weight, bias)?;
    let per_group = c / groups;
    let block = per_group * spatial;
    let x = x.contiguous_data();
    let (w, b) = (weight.contiguous_data(), bias.contiguous_data());
    let mut out = crate::pool::for_overwrite(x.len());
    let mut stats = vec![(T::ZERO, T::ZERO); n * groups];
    if block > 0 {
        out.par_chunks_mut(block).zip(x.par_chunks(block)).zip(stats.par_iter_mut()).enumerate().for_each(|(ng, ((y, x), stat))| {
            let (mean_t, rstd_t) = block_stats(x, eps);
            let first_channel = (ng % groups) * per_group;
            for (j, (yc, xc)) in y.chunks_mut(spatial).zip(x.chunks(spatial)).enumerate() {
                let (scale, shift) = affine(mean_t, rstd_t, w[first_channel + j], b[first_channel + j]);
                map_into(xc, yc, |v| act(v * scale + shift));
            }
            *stat = (mean_t, rstd_t);
        });
    }
    let (mean, rstd): (Vec<T>, Vec<T>) = stats.into_iter().unzip();
    Ok((out, Arc::new(mean), Arc::new(rstd)))
}

/// The mean and 1/std of one (sample, group) block, its channels one after
/// another.
fn block_stats<T: Float>(x: &[T], eps: f64) -> (T, T) {
    // Two passes (mean, then squared deviations) avoid the cancellation
    // of E[x^2] - mean^2; the block (its channels are contiguous) is summed
    // in T lanes. Compiled for the CPU's widest vectors (the same sums, lane
    // for lane).
    let count = x.len() as f64;
    let (mean, var) = vectorized(
        #[inline(always)]
        || {
            let mean = lane_sum::<T, STAT_LANES>(x, |v| v) / count;
            let m = T::from_f64(mean);
            (mean, lane_sum::<T, STAT_LANES>(x, |v| (v - m) * (v - m)) / count)
        },
    );
    let rstd = 1.0 / (var + eps).sqrt();
    (T::from_f64(mean), T::from_f64(rstd))
}

/// `y = x * scale + shift`: the normalisation and the channel's affine map folded
/// into one multiply-add, the same in the forward and in the recomputation of
/// the fused backward.
fn affine<T: Float>(mean: T, rstd: T, weight: T, bias: T) -> (T, T) {
    let scale = rstd * weight;
    (scale, bias - mean * scale)
}

/// Group normalisation composed from primitives (reshape, mean, var, sqrt, div,
/// mul, add): the reference the fused op is tested against.
///
/// # Errors
/// As [`Tensor::group_norm`].
pub fn group_norm_composed<T: Float>(x: &Tensor<T>, groups: usize, weight: &Tensor<T>, bias: &Tensor<T>, eps: f64) -> Result<Tensor<T>> {
    let (n, c, _) = check(x, groups, weight, bias)?;
    let grouped = x.reshape(&[n, groups, x.elem_count() / (n * groups).max(1)])?;
    let mean = grouped.mean(&[2], true)?;
    let var = grouped.var(&[2], true, false)?;
    let xhat = grouped.sub(&mean)?.div(&var.add_scalar(T::from_f64(eps)).sqrt())?.reshape(x.dims())?;
    let mut affine_dims = vec![1; x.rank()];
    affine_dims[1] = c;
    xhat.mul(&weight.reshape(&affine_dims)?)?.add(&bias.reshape(&affine_dims)?)
}

/// Lanes of the forward's block sums: four 16-float vectors, four
/// independent chains of additions, where eight lanes (half a vector, one
/// chain) waited on each addition's latency. With these and
/// [`GRAD_LANES`], group norm + SiLU forward and backward at batch 64 ran
/// 2.45-2.66 -> 2.04-2.23 ms at 48 channels of 28 x 28, 0.80-0.92 -> 0.69-0.77
/// at 16, and the course UNet's training step 0.454-0.462 -> 0.440-0.453 s
/// (`benches/SPEED.md`, session 35).
const STAT_LANES: usize = 64;

/// Lanes of the backward's two sums a channel (two chains each); a
/// channel's row is shorter than a block (49 values at 7 x 7), so fewer
/// than [`STAT_LANES`].
const GRAD_LANES: usize = 32;

/// `sum_i f(x_i)` over a row: accumulated in `LANES` lanes of `T` (so the
/// loop vectorises; the row's tail goes into the first lanes), then the lanes
/// added up pairwise in f64 ([`fold_lanes`]). Added one after another, the 64
/// lanes and a tail of up to 63 values were two chains of dependent f64 adds,
/// longer than the vector loop over a block of 1,568 values; group norm's sums
/// spent most of their time there.
#[inline(always)]
fn lane_sum<T: Float, const LANES: usize>(row: &[T], f: impl Fn(T) -> T) -> f64 {
    let mut lanes = [T::ZERO; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += f(v);
        }
    }
    for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += f(v);
    }
    fold_lanes(lanes.map(|v| v.to_f64()))
}

/// `(sum_i g_i, sum_i g_i x_i)` over a row, as [`lane_sum`].
#[inline(always)]
fn lane_sums_g_gx<T: Float>(g: &[T], x: &[T]) -> (f64, f64) {
    let (mut sg, mut sgx) = ([T::ZERO; GRAD_LANES], [T::ZERO; GRAD_LANES]);
    let (mut gc, mut xc) = (g.chunks_exact(GRAD_LANES), x.chunks_exact(GRAD_LANES));
    for (gc, xc) in (&mut gc).zip(&mut xc) {
        for l in 0..GRAD_LANES {
            sg[l] += gc[l];
            sgx[l] += gc[l] * xc[l];
        }
    }
    for ((sg, sgx), (&g, &x)) in sg.iter_mut().zip(&mut sgx).zip(gc.remainder().iter().zip(xc.remainder())) {
        *sg += g;
        *sgx += g * x;
    }
    (fold_lanes(sg.map(|v| v.to_f64())), fold_lanes(sgx.map(|v| v.to_f64())))
}

// With xhat = (x - mean) rstd and dxhat = g * weight[c], over one block of M elements:
//   term 1: dL/dx = rstd * dxhat                      (x directly)
//   term 2:       - rstd * mean(dxhat)                (through the mean)
//   term 3:       - rstd * xhat * mean(dxhat * xhat)  (through the variance)
//   dL/dweight[c] = sum over n and spatial of g * xhat
//   dL/dbias[c]   = sum over n and spatial of g
// Every sum reduces to two per channel, S_g = sum g and S_gx = sum g x, because
// sum g xhat = rstd (S_gx - mean S_g). Then dL/dx is affine in (g, x) per channel:
//   dL/dx = (rstd w[c]) g + (-rstd^2 mean(dxhat xhat)) x + rstd (mean rstd mean(dxhat xhat) - mean(dxhat)),
// one fused multiply-add chain per element. `block_backward` computes it for one
// (sample, group) block; `backward_blocks` runs the blocks on the threads.
pub(crate) fn group_norm_backward<T: Float>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    groups: usize,
    mean: &[T],
    rstd: &[T],
    g: &Tensor<T>,
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    let gd = g.contiguous_data();
    backward_blocks(x, weight, groups, mean, rstd, |_, range, f| f(&gd[range]))
}

/// The group-norm backward of every (sample, group) block, on the threads:
/// `block_grad(ng, range, f)` hands `f` the upstream gradient of block `ng`
/// (the elements `range` of x), as stored or computed on the spot.
fn backward_blocks<T: Float>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    groups: usize,
    mean: &[T],
    rstd: &[T],
    block_grad: impl Fn(usize, std::ops::Range<usize>, &mut dyn FnMut(&[T])) + Sync,
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    let (n, _, spatial, per_group) = sizes(x, groups);
    let c = x.dims()[1];
    let block = per_group * spatial;
    let (xd, w) = (x.contiguous_data(), weight.contiguous_data());
    let mut grad_x = crate::pool::for_overwrite(xd.len());
    // Per-block parameter gradients, one flat buffer of `2 * per_group` values a
    // block (dL/dweight, then dL/dbias, for the block's channels; no allocation
    // a block), reduced below in a fixed order so the result does not depend on
    // the thread count.
    let mut partial = vec![0.0f64; n * groups * 2 * per_group];
    if block > 0 {
        let parts = partial.par_chunks_mut((2 * per_group).max(1));
        grad_x.par_chunks_mut(block).zip(xd.par_chunks(block)).zip(parts).enumerate().for_each(|(ng, ((dx, x), part))| {
            block_grad(ng, ng * block..(ng + 1) * block, &mut |g| {
                block_backward(dx, x, g, (mean[ng], rstd[ng]), &w[(ng % groups) * per_group..][..per_group], spatial, part);
            });
        });
    }
    let (mut grad_w, mut grad_b) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (ng, part) in partial.chunks_exact((2 * per_group).max(1)).enumerate() {
        let first_channel = (ng % groups) * per_group;
        let (gw, gb) = part.split_at(per_group);
        for j in 0..per_group {
            grad_w[first_channel + j] += gw[j];
            grad_b[first_channel + j] += gb[j];
        }
    }
    let cast = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
    Ok((Tensor::from_vec(grad_x, x.dims())?, Tensor::from_vec(cast(grad_w), &[c])?, Tensor::from_vec(cast(grad_b), &[c])?))
}

/// One block of the backward above: writes `dx` from the block's `x`, its
/// upstream gradient `g` and statistics, and the block's channels' dL/dweight
/// then dL/dbias into `grads` (`2 * w.len()` values); `w` holds those channels' weights.
fn block_backward<T: Float>(dx: &mut [T], x: &[T], g: &[T], (mean, rstd): (T, T), w: &[T], spatial: usize, grads: &mut [f64]) {
    // Compiled for the CPU's widest vectors (the same sums, lane for lane).
    vectorized(
        #[inline(always)]
        || block_backward_body(dx, x, g, (mean, rstd), w, spatial, grads),
    )
}

/// [`block_backward`]'s arithmetic.
#[inline(always)]
fn block_backward_body<T: Float>(dx: &mut [T], x: &[T], g: &[T], (mean, rstd): (T, T), w: &[T], spatial: usize, grads: &mut [f64]) {
    let per_group = w.len();
    let (gw, gb) = grads.split_at_mut(per_group);
    let (mu, rs) = (mean.to_f64(), rstd.to_f64());
    let (mut sum_dxhat, mut sum_dxhat_xhat) = (0.0f64, 0.0f64);
    for j in 0..per_group {
        let rows = j * spatial..(j + 1) * spatial;
        let (s_g, s_gx) = lane_sums_g_gx(&g[rows.clone()], &x[rows]);
        let wc = w[j].to_f64();
        gb[j] = s_g;
        gw[j] = rs * (s_gx - mu * s_g);
        sum_dxhat += wc * s_g;
        sum_dxhat_xhat += wc * gw[j];
    }
    let m = (per_group * spatial) as f64;
    let (mean_dxhat, mean_dxhat_xhat) = (sum_dxhat / m, sum_dxhat_xhat / m);
    let coef_x = T::from_f64(-rs * rs * mean_dxhat_xhat);
    let shift = T::from_f64(rs * (mu * rs * mean_dxhat_xhat - mean_dxhat));
    for (j, &wj) in w.iter().enumerate() {
        let coef_g = T::from_f64(rs * wj.to_f64());
        let rows = j * spatial..(j + 1) * spatial;
        for ((d, &gv), &xv) in dx[rows.clone()].iter_mut().zip(&g[rows.clone()]).zip(&x[rows]) {
            *d = coef_g * gv + coef_x * xv + shift;
        }
    }
}

/// The backward of [`Tensor::group_norm_silu`]: the normalised values `z` are
/// recomputed exactly as the forward computed them, `dz = g silu'(z)`, then
/// the group-norm backward with `dz`.
pub(crate) fn group_norm_silu_backward<T: Float>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    bias: &Tensor<T>,
    groups: usize,
    mean: &[T],
    rstd: &[T],
    g: &Tensor<T>,
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    let (_, c, spatial, per_group) = sizes(x, groups);
    let (xd, gd) = (x.contiguous_data(), g.contiguous_data());
    let (w, b) = (weight.contiguous_data(), bias.contiguous_data());
    // dz of one block at a time, in a scratch buffer that stays in cache for
    // the group-norm backward that reads it next (a whole dz tensor would be
    // written out to memory and read back).
    backward_blocks(x, weight, groups, mean, rstd, |ng, range, f| {
        with_scratch(range.len(), |dz: &mut [T]| {
            let (x, g) = (&xd[range.clone()], &gd[range.clone()]);
            for (j, ((dz, x), g)) in dz.chunks_mut(spatial).zip(x.chunks(spatial)).zip(g.chunks(spatial)).enumerate() {
                let channel = (ng * per_group + j) % c;
                let (scale, shift) = affine(mean[ng], rstd[ng], w[channel], b[channel]);
                zip_into(x, g, dz, |v, gv| silu_chain(v * scale + shift, gv));
            }
            f(dz)
        })
    })
}
