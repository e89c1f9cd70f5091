//! The blocks and the UNet against central finite differences in f64
//! (`tensor::gradcheck`): the autograd gradient of `sum(f(inputs) * R)` must match
//! `(L(x + h e_j) - L(x - h e_j)) / 2h` for every element of the checked inputs.
//!
//! A finite-difference check costs two forward passes per input element, so each
//! check takes the input `x` and a few small parameter tensors as inputs: the
//! closure builds a copy of the module with those tensors swapped in. `gradcheck`
//! takes any function of tensors, so it speaks the tensor crate's errors: the closures
//! hand on a module's error with [`nn::Error::into_tensor_error`].

use nn::Result;
use nn::{AttentionBlock, MlpConfig, MlpDenoiser, Module, ResBlock, UNet, UNetConfig};
use tensor::{gradcheck, rng, Tensor};

const TOL: f64 = 1e-6;

/// A copy of `model` whose parameters named in `names` are replaced by `values`.
fn with_params<M: Module<f64> + Clone>(model: &M, names: &[&str], values: &[Tensor<f64>]) -> M {
    let mut copy = model.clone();
    let mut replaced = 0;
    copy.visit_params_mut("", &mut |name, p| {
        if let Some(i) = names.iter().position(|n| *n == name) {
            *p = values[i].clone();
            replaced += 1;
        }
    });
    assert_eq!(replaced, names.len(), "every name in {names:?} is a parameter");
    copy
}

/// The current values of the named parameters.
fn params_named<M: Module<f64>>(model: &M, names: &[&str]) -> Vec<Tensor<f64>> {
    let all = model.named_params();
    names.iter().map(|n| all.iter().find(|(name, _)| name == n).unwrap_or_else(|| panic!("no parameter {n}")).1.detach()).collect()
}

#[test]
fn res_block_with_channel_change_matches_finite_differences() -> Result<()> {
    let mut r = rng(1);
    // Cin 4 != Cout 6: the skip path is a 1x1 convolution.
    let block = ResBlock::<f64>::new(4, 6, 5, 2, 0.0, &mut r)?;
    let x = Tensor::randn(&[2, 4, 5, 5], &mut r);
    let temb = Tensor::randn(&[2, 5], &mut r);
    let names = ["norm1.weight", "conv1.bias", "time_proj.weight", "norm2.bias", "conv2.weight", "skip.weight"];
    let mut inputs = vec![x, temb];
    inputs.extend(params_named(&block, &names));
    let check = gradcheck(
        |v| {
            let b = with_params(&block, &names, &v[2..]);
            b.forward(&v[0], &v[1]).map_err(nn::Error::into_tensor_error)
        },
        &inputs,
    )?;
    assert!(check.max_error < TOL, "{check:?}");
    Ok(())
}

#[test]
fn attention_block_matches_finite_differences() -> Result<()> {
    let mut r = rng(2);
    let block = AttentionBlock::<f64>::new(4, 2, &mut r)?;
    let x = Tensor::randn(&[2, 4, 3, 3], &mut r);
    let names = ["norm.weight", "qkv.weight", "qkv.bias", "proj.weight"];
    let mut inputs = vec![x];
    inputs.extend(params_named(&block, &names));
    let check = gradcheck(|v| with_params(&block, &names, &v[1..]).forward(&v[0]).map_err(nn::Error::into_tensor_error), &inputs)?;
    assert!(check.max_error < TOL, "{check:?}");
    Ok(())
}

#[test]
fn tiny_unet_end_to_end_matches_finite_differences() -> Result<()> {
    let mut r = rng(3);
    let config = UNetConfig { groups: 2, ..UNetConfig::tiny() };
    let unet = UNet::<f64>::new(&config, &mut r)?;
    let x = Tensor::randn(&[1, 1, 8, 8], &mut r);
    // One small tensor from each part of the network: the time MLP, the first and
    // the last layer, a skip path of the way up, an attention block, the middle.
    let names = [
        "time_embed.linear1.bias",
        "input_conv.bias",
        "down.1.attn.0.norm.weight",
        "mid.res1.time_proj.bias",
        "up.1.res.0.skip.bias",
        "up.0.res.2.conv2.bias",
        "out.norm.bias",
        "out.conv.weight",
    ];
    let mut inputs = vec![x];
    inputs.extend(params_named(&unet, &names));
    let check = gradcheck(|v| with_params(&unet, &names, &v[1..]).forward(&v[0], &[7]).map_err(nn::Error::into_tensor_error), &inputs)?;
    assert!(check.max_error < TOL, "{check:?}");
    Ok(())
}

#[test]
fn mlp_denoiser_matches_finite_differences() -> Result<()> {
    let mut r = rng(4);
    let mlp = MlpDenoiser::<f64>::new(&MlpConfig { data_dim: 3, hidden_dim: 8, depth: 2, time_embed_dim: 4 }, &mut r)?;
    let x = Tensor::randn(&[4, 3], &mut r);
    let names = ["input.weight", "hidden.0.bias", "output.weight"];
    let mut inputs = vec![x];
    inputs.extend(params_named(&mlp, &names));
    let check =
        gradcheck(|v| with_params(&mlp, &names, &v[1..]).forward(&v[0], &[0, 1, 50, 999]).map_err(nn::Error::into_tensor_error), &inputs)?;
    assert!(check.max_error < TOL, "{check:?}");
    Ok(())
}
