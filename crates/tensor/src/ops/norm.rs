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
use crate::op::Op;
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::sync::Arc;

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
        let (n, c, spatial) = check(self, groups, weight, bias)?;
        let per_group = c / groups;
        let block = per_group * spatial;
        let x = self.contiguous_data();
        let (w, b) = (weight.contiguous_data(), bias.contiguous_data());
        let mut out = vec![T::ZERO; x.len()];
        let mut stats = vec![(T::ZERO, T::ZERO); n * groups];
        if block > 0 {
            out.par_chunks_mut(block).zip(x.par_chunks(block)).zip(stats.par_iter_mut()).enumerate().for_each(
                |(ng, ((y, x), stat))| {
                    let count = x.len() as f64;
                    let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / count;
                    let var = x.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / count;
                    let rstd = 1.0 / (var + eps).sqrt();
                    let (mean_t, rstd_t) = (T::from_f64(mean), T::from_f64(rstd));
                    let first_channel = (ng % groups) * per_group;
                    for (j, (yc, xc)) in y.chunks_mut(spatial).zip(x.chunks(spatial)).enumerate() {
                        let ch = first_channel + j;
                        // y = x * scale + shift with the normalisation folded in.
                        let scale = rstd_t * w[ch];
                        let shift = b[ch] - mean_t * scale;
                        for (o, &v) in yc.iter_mut().zip(xc) {
                            *o = v * scale + shift;
                        }
                    }
                    *stat = (mean_t, rstd_t);
                },
            );
        }
        let (mean, rstd): (Vec<T>, Vec<T>) = stats.into_iter().unzip();
        let op = Op::GroupNorm {
            x: self.clone(),
            weight: weight.clone(),
            bias: bias.clone(),
            groups,
            mean: Arc::new(mean),
            rstd: Arc::new(rstd),
        };
        Ok(Tensor::from_op(out, self.dims(), op))
    }
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

// With xhat = (x - mean) rstd and dxhat = g * weight[c], over one block of M elements:
//   term 1: dL/dx = rstd * dxhat                      (x directly)
//   term 2:       - rstd * mean(dxhat)                (through the mean)
//   term 3:       - rstd * xhat * mean(dxhat * xhat)  (through the variance)
//   dL/dweight[c] = sum over n and spatial of g * xhat
//   dL/dbias[c]   = sum over n and spatial of g
pub(crate) fn group_norm_backward<T: Float>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    groups: usize,
    mean: &[T],
    rstd: &[T],
    g: &Tensor<T>,
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    let (n, c) = (x.dims()[0], x.dims()[1]);
    let spatial = x.elem_count() / (n * c).max(1);
    let per_group = c / groups;
    let block = per_group * spatial;
    let (xd, gd, w) = (x.contiguous_data(), g.contiguous_data(), weight.contiguous_data());
    let mut grad_x = vec![T::ZERO; xd.len()];
    // Per-block partial sums of the parameter gradients, reduced below in a fixed
    // order so the result does not depend on the thread count.
    let mut partial = vec![(Vec::new(), Vec::new()); n * groups];
    if block > 0 {
        grad_x.par_chunks_mut(block).zip(xd.par_chunks(block)).zip(gd.par_chunks(block)).zip(partial.par_iter_mut()).enumerate().for_each(
            |(ng, (((dx, x), g), part))| {
                let (mu, rs) = (mean[ng].to_f64(), rstd[ng].to_f64());
                let first_channel = (ng % groups) * per_group;
                let (mut sum_dxhat, mut sum_dxhat_xhat) = (0.0f64, 0.0f64);
                let (mut gw, mut gb) = (vec![0.0f64; per_group], vec![0.0f64; per_group]);
                for j in 0..per_group {
                    let wc = w[first_channel + j].to_f64();
                    for s in j * spatial..(j + 1) * spatial {
                        let (gv, xhat) = (g[s].to_f64(), (x[s].to_f64() - mu) * rs);
                        sum_dxhat += gv * wc;
                        sum_dxhat_xhat += gv * wc * xhat;
                        gw[j] += gv * xhat;
                        gb[j] += gv;
                    }
                }
                let m = block as f64;
                let (mean_dxhat, mean_dxhat_xhat) = (sum_dxhat / m, sum_dxhat_xhat / m);
                for j in 0..per_group {
                    let wc = w[first_channel + j].to_f64();
                    for s in j * spatial..(j + 1) * spatial {
                        let xhat = (x[s].to_f64() - mu) * rs;
                        let dxhat = g[s].to_f64() * wc;
                        dx[s] = T::from_f64(rs * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat));
                    }
                }
                *part = (gw, gb);
            },
        );
    }
    let (mut grad_w, mut grad_b) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (ng, (gw, gb)) in partial.iter().enumerate() {
        let first_channel = (ng % groups) * per_group;
        for j in 0..gw.len() {
            grad_w[first_channel + j] += gw[j];
            grad_b[first_channel + j] += gb[j];
        }
    }
    let cast = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
    Ok((
        Tensor::from_vec(grad_x, x.dims())?,
        Tensor::from_vec(cast(grad_w), &[c])?,
        Tensor::from_vec(cast(grad_b), &[c])?,
    ))
}
