//! The UNet's blocks against their definitions computed by hand, element by element
//! in plain f64 loops (no tensor op), and their FLOP counts against the count of
//! their multiply-adds.
//!
//! Gradient checks (`gradcheck.rs`) prove that a block's backward matches its
//! forward; they cannot tell a forward that computes the wrong function, such as
//! attention that reads its values from the keys' rows. These tests can.
//!
//! Shapes: `x` `[B, C, H, W]` stored as `x[((b C + c) H + y) W + x]`, `L = H W`.

use nn::Result;
use nn::{AttentionBlock, Linear, Module, ResBlock, UNet, UNetConfig};
use tensor::{rng, Tensor};

/// Every parameter of `module` replaced by values drawn from N(0, 0.5^2) (seeded),
/// so that no weight is a convenient 0 or 1 (a fresh GroupNorm's scale is 1).
fn randomise<M: Module<f64>>(module: &mut M, seed: u64) {
    let mut r = rng(seed);
    module.visit_params_mut("", &mut |_, p| *p = Tensor::randn(p.dims(), &mut r).mul_scalar(0.5));
}

/// The parameter `name` of `module` as a vector.
fn param<M: Module<f64>>(module: &M, name: &str) -> Vec<f64> {
    let mut found = None;
    module.visit_params("", &mut |n, p| {
        if n == name {
            found = Some(p.to_vec());
        }
    });
    found.unwrap_or_else(|| panic!("no parameter {name}"))
}

/// `GroupNorm(groups)` of `x [B, C, L]` with per-channel scale and shift: each
/// (sample, group) block normalised by its mean and biased variance.
fn group_norm(x: &[f64], (b, c, l): (usize, usize, usize), groups: usize, scale: &[f64], shift: &[f64], eps: f64) -> Vec<f64> {
    let per_group = c / groups;
    let mut out = vec![0.0; x.len()];
    for s in 0..b {
        for g in 0..groups {
            let range = (s * c + g * per_group) * l..(s * c + (g + 1) * per_group) * l;
            let block = &x[range.clone()];
            let mean = block.iter().sum::<f64>() / block.len() as f64;
            let var = block.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / block.len() as f64;
            for i in range {
                let channel = (i / l) % c;
                out[i] = (x[i] - mean) / (var + eps).sqrt() * scale[channel] + shift[channel];
            }
        }
    }
    out
}

/// `silu(v) = v / (1 + e^-v)`.
fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

/// A 1x1 convolution `x [B, Cin, L] -> [B, Cout, L]`: `w [Cout, Cin]`, bias `[Cout]`.
fn pointwise(x: &[f64], (b, cin, l): (usize, usize, usize), w: &[f64], bias: &[f64]) -> Vec<f64> {
    let cout = bias.len();
    let mut out = vec![0.0; b * cout * l];
    for s in 0..b {
        for o in 0..cout {
            for p in 0..l {
                out[(s * cout + o) * l + p] = bias[o] + (0..cin).map(|i| w[o * cin + i] * x[(s * cin + i) * l + p]).sum::<f64>();
            }
        }
    }
    out
}

/// A 3x3 convolution with zero padding 1, `x [B, Cin, H, W] -> [B, Cout, H, W]`:
/// `out[o, y, x] = bias[o] + sum_{i, dy, dx} w[o, i, dy, dx] x[i, y + dy - 1, x + dx - 1]`.
fn conv3x3(x: &[f64], (b, cin, h, w): (usize, usize, usize, usize), weight: &[f64], bias: &[f64]) -> Vec<f64> {
    let cout = bias.len();
    let mut out = vec![0.0; b * cout * h * w];
    for s in 0..b {
        for o in 0..cout {
            for y in 0..h {
                for xx in 0..w {
                    let mut sum = bias[o];
                    for i in 0..cin {
                        for dy in 0..3 {
                            for dx in 0..3 {
                                let (sy, sx) = ((y + dy).wrapping_sub(1), (xx + dx).wrapping_sub(1));
                                if sy < h && sx < w {
                                    sum += weight[((o * cin + i) * 3 + dy) * 3 + dx] * x[((s * cin + i) * h + sy) * w + sx];
                                }
                            }
                        }
                    }
                    out[((s * cout + o) * h + y) * w + xx] = sum;
                }
            }
        }
    }
    out
}

fn assert_close(actual: &[f64], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}");
    let worst = actual.iter().zip(expected).map(|(a, e)| (a - e).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-12, "{what}: largest difference {worst:e}");
}

#[test]
fn attention_block_matches_its_definition() -> Result<()> {
    // n = GroupNorm(x); q, k, v = rows 0..C, C..2C, 2C..3C of qkv(n);
    // a[:, i] = sum_j softmax_j(q_i . k_j / sqrt(C)) v_j; out = x + proj(a).
    let (b, c, h, w, groups) = (2, 4, 2, 3, 2);
    let l = h * w;
    let mut block = AttentionBlock::<f64>::new(c, groups, &mut rng(0))?;
    randomise(&mut block, 1);
    let x = Tensor::<f64>::randn(&[b, c, h, w], &mut rng(2));
    let out = block.forward(&x)?.to_vec();

    let xs = x.to_vec();
    let n = group_norm(&xs, (b, c, l), groups, &param(&block, "norm.weight"), &param(&block, "norm.bias"), block.norm.eps);
    let qkv = pointwise(&n, (b, c, l), &param(&block, "qkv.weight"), &param(&block, "qkv.bias"));
    let row = |s: usize, part: usize, ch: usize, p: usize| qkv[(s * 3 * c + part * c + ch) * l + p];
    let mut a = vec![0.0; b * c * l];
    for s in 0..b {
        for i in 0..l {
            let scores: Vec<f64> =
                (0..l).map(|j| (0..c).map(|ch| row(s, 0, ch, i) * row(s, 1, ch, j)).sum::<f64>() / (c as f64).sqrt()).collect();
            let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = scores.iter().map(|v| (v - top).exp()).sum();
            for ch in 0..c {
                a[(s * c + ch) * l + i] = (0..l).map(|j| (scores[j] - top).exp() / total * row(s, 2, ch, j)).sum::<f64>();
            }
        }
    }
    let projected = pointwise(&a, (b, c, l), &param(&block, "proj.weight"), &param(&block, "proj.bias"));
    let expected: Vec<f64> = xs.iter().zip(&projected).map(|(x, p)| x + p).collect();
    assert_close(&out, &expected, "attention block");
    Ok(())
}

/// Tiny channels, and 32 -> 48 channels at 7 x 7, where the convolutions
/// take the Winograd path and, with no gradient to record, normalise their
/// inputs as they read them. There the block must also give the same bits
/// as with a graph (the group norms and convolutions as separate ops).
#[test]
fn residual_block_matches_its_definition() -> Result<()> {
    residual_block_case((2, 2, 4, 3, 5, 2))?;
    residual_block_case((2, 32, 48, 7, 5, 8))
}

fn residual_block_case((b, cin, cout, side, embed, groups): (usize, usize, usize, usize, usize, usize)) -> Result<()> {
    // h = conv1(silu(norm1(x))) + time_proj(silu(temb)) per channel;
    // out = skip(x) + conv2(silu(norm2(h))), skip a 1x1 convolution when Cin != Cout.
    let l = side * side;
    let mut block = ResBlock::<f64>::new(cin, cout, embed, groups, 0.0, &mut rng(3))?;
    randomise(&mut block, 4);
    let x = Tensor::<f64>::randn(&[b, cin, side, side], &mut rng(5));
    let temb = Tensor::<f64>::randn(&[b, embed], &mut rng(6));
    let out = tensor::no_grad(|| block.forward(&x, &temb))?.to_vec();
    let tracked = block.forward(&x.clone().requires_grad(), &temb)?.to_vec();
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&out), bits(&tracked), "{cin} -> {cout} at {side} x {side}: without a graph and with one");

    let xs = x.to_vec();
    let eps = block.norm1.eps;
    let n1: Vec<f64> = group_norm(&xs, (b, cin, l), groups, &param(&block, "norm1.weight"), &param(&block, "norm1.bias"), eps)
        .into_iter()
        .map(silu)
        .collect();
    let mut h = conv3x3(&n1, (b, cin, side, side), &param(&block, "conv1.weight"), &param(&block, "conv1.bias"));
    let (tw, tb, t) = (param(&block, "time_proj.weight"), param(&block, "time_proj.bias"), temb.to_vec());
    for s in 0..b {
        for o in 0..cout {
            let shift = tb[o] + (0..embed).map(|e| tw[o * embed + e] * silu(t[s * embed + e])).sum::<f64>();
            h[(s * cout + o) * l..(s * cout + o + 1) * l].iter_mut().for_each(|v| *v += shift);
        }
    }
    let n2: Vec<f64> = group_norm(&h, (b, cout, l), groups, &param(&block, "norm2.weight"), &param(&block, "norm2.bias"), eps)
        .into_iter()
        .map(silu)
        .collect();
    let h = conv3x3(&n2, (b, cout, side, side), &param(&block, "conv2.weight"), &param(&block, "conv2.bias"));
    let skip = pointwise(&xs, (b, cin, l), &param(&block, "skip.weight"), &param(&block, "skip.bias"));
    let expected: Vec<f64> = skip.iter().zip(&h).map(|(s, h)| s + h).collect();
    assert_close(&out, &expected, "residual block");
    Ok(())
}

#[test]
fn flop_counts_are_twice_the_multiply_adds() -> Result<()> {
    // n maps of side s, L = s^2 positions; a k x k convolution Cin -> Cout does
    // L Cout Cin k^2 multiply-adds a map, a linear layer E -> Cout does E Cout,
    // attention's two products L^2 C each.
    let (n, s) = (3, 7);
    let l = s * s;
    let attention = AttentionBlock::<f32>::new(8, 4, &mut rng(0))?;
    let macs = n * (l * 3 * 8 * 8 + l * 8 * 8 + 2 * l * l * 8);
    assert_eq!(attention.flops(n, s), 2.0 * macs as f64);
    let with_skip = ResBlock::<f32>::new(4, 8, 16, 4, 0.0, &mut rng(0))?;
    let macs = n * (l * 8 * 4 * 9 + 16 * 8 + l * 8 * 8 * 9 + l * 8 * 4);
    assert_eq!(with_skip.flops(n, s), 2.0 * macs as f64);
    let without_skip = ResBlock::<f32>::new(8, 8, 16, 4, 0.0, &mut rng(0))?;
    let macs = n * (l * 8 * 8 * 9 + 16 * 8 + l * 8 * 8 * 9);
    assert_eq!(without_skip.flops(n, s), 2.0 * macs as f64);
    let linear = Linear::<f32>::new(5, 3, &mut rng(0));
    assert_eq!(linear.flops(n), 2.0 * (n * 5 * 3) as f64);
    Ok(())
}

/// The DDPM code's initialisation (`UNet::zero_branch_outputs`): with the last
/// layer of every branch at zero, each residual block is its skip path and each
/// attention block the identity, so the network is the zero function. Then the
/// chain rule says which parameters learn first: a zeroed layer's weight
/// gradient is its input times `dout`, not zero, but it passes `dout W = 0` back,
/// so at the first step only the output convolution has a gradient. Once that is
/// not zero (after its first step), the gradient flows down the skip paths: the
/// layers on them learn, and so do the zeroed layers, but not the layers inside a
/// branch before its zeroed last one (first convolutions, time projections,
/// norms, queries and keys), whose gradient still passes through a zero weight.
#[test]
fn zeroed_branch_outputs_make_every_block_its_skip_path() -> Result<()> {
    let config = UNetConfig { channel_mults: vec![1, 2], num_res_blocks: 1, ..UNetConfig::tiny() };
    let mut unet = UNet::<f64>::new(&config, &mut rng(5))?;
    unet.zero_branch_outputs();
    let mut r = rng(7);
    let x = Tensor::<f64>::randn(&[2, 1, 8, 8], &mut r);
    let t = [3, 700];

    // Block by block: out = skip(x), bit for bit.
    let temb = Tensor::<f64>::randn(&[2, config.time_embed_dim], &mut r);
    let h = Tensor::<f64>::randn(&[2, 8, 8, 8], &mut r);
    let widening = &unet.down[1].res[0]; // 8 -> 16 channels: a 1x1 skip
    let skip = widening.skip.as_ref().expect("the channels change");
    assert_eq!(widening.forward(&h, &temb)?.to_vec(), skip.forward(&h)?.to_vec());
    let h16 = Tensor::<f64>::randn(&[2, 16, 4, 4], &mut r);
    assert_eq!(unet.mid.res1.forward(&h16, &temb)?.to_vec(), h16.to_vec(), "same channels: the identity");
    assert_eq!(unet.mid.attn.forward(&h16)?.to_vec(), h16.to_vec());
    assert!(unet.forward(&x, &t)?.to_vec().iter().all(|&v| v == 0.0), "the zero function");

    // Which parameters have a gradient of sum(out * target), before and after
    // the output convolution's first step.
    let target = Tensor::<f64>::randn(&[2, 1, 8, 8], &mut r);
    let learning = |unet: &UNet<f64>| -> Result<Vec<String>> {
        let grads = unet.forward(&x, &t)?.mul(&target)?.sum_all()?.backward()?;
        let mut names = Vec::new();
        unet.visit_params("", &mut |name, p| {
            if grads.get(p).is_some_and(|g| g.to_vec().iter().any(|&v| v != 0.0)) {
                names.push(name.to_string());
            }
        });
        Ok(names)
    };
    assert_eq!(learning(&unet)?, ["out.conv.weight", "out.conv.bias"]);

    unet.out_conv.weight = Tensor::randn(unet.out_conv.weight.dims(), &mut r).requires_grad();
    let names = learning(&unet)?;
    let learns = |name: &str| names.iter().any(|n| n == name);
    for on_a_path in [
        "input_conv.weight",
        "down.0.downsample.conv.weight",
        "down.1.res.0.skip.weight",
        "up.1.upsample.conv.weight",
        "up.0.res.0.skip.weight",
        "out.norm.weight",
    ] {
        assert!(learns(on_a_path), "{on_a_path} is on a skip path: {names:?}");
    }
    for zeroed in ["down.0.res.0.conv2.weight", "mid.res2.conv2.bias", "mid.attn.proj.weight", "up.0.res.1.conv2.weight"] {
        assert!(learns(zeroed), "{zeroed}: its input times dout: {names:?}");
    }
    for inside in [
        "down.0.res.0.conv1.weight",
        "mid.res1.time_proj.weight",
        "mid.res1.norm2.weight",
        "mid.attn.qkv.weight",
        "time_embed.linear1.weight",
    ] {
        assert!(!learns(inside), "{inside} sits before a zero weight: {names:?}");
    }
    Ok(())
}
