//! The Module contract: parameter counts, unique names in a stable order, seeded
//! initialisation, clones, modes, and shapes through the models.

use nn::{Dropout, Error, MlpConfig, MlpDenoiser, Mode, Module, Result, UNet, UNetConfig};
use std::collections::HashSet;
use tensor::{no_grad, rng, Tensor};

#[test]
fn default_unet_has_exactly_1_623_169_parameters() -> Result<()> {
    let unet = UNet::<f32>::new(&UNetConfig::default(), &mut rng(0))?;
    assert_eq!(unet.num_params(), 1_623_169);
    Ok(())
}

#[test]
fn parameter_counts_from_the_config_match_the_built_models() -> Result<()> {
    // Every kind of block: skip projections (channels change), attention at one
    // level or none, one to three blocks a level, two to four levels, RGB images.
    let unets = [
        UNetConfig::default(),
        UNetConfig::tiny(),
        UNetConfig { channel_mults: vec![1, 2, 4], ..UNetConfig::default() },
        UNetConfig { attention_resolutions: vec![], num_res_blocks: 1, base_channels: 16, ..UNetConfig::default() },
        UNetConfig {
            image_channels: 3,
            image_size: 32,
            channel_mults: vec![1, 2, 2, 2],
            attention_resolutions: vec![16],
            num_res_blocks: 3,
            ..UNetConfig::default()
        },
    ];
    for config in unets {
        let built = UNet::<f32>::new(&config, &mut rng(0))?.num_params() as u64;
        assert_eq!(config.parameter_count(), built, "{config:?}");
    }
    for config in [MlpConfig::toy_2d(), MlpConfig::mnist(), MlpConfig { depth: 1, ..MlpConfig::toy_2d() }] {
        assert_eq!(config.parameter_count(), MlpDenoiser::<f32>::new(&config, &mut rng(0))?.num_params() as u64, "{config:?}");
    }
    // Absurd sizes saturate instead of wrapping, and are refused by name.
    let huge = UNetConfig { base_channels: 1 << 62, channel_mults: vec![1, 4], groups: 1, ..UNetConfig::default() };
    assert!(huge.validate().unwrap_err().to_string().contains("overflows"));
    assert_eq!(UNetConfig { base_channels: 1 << 40, ..UNetConfig::default() }.parameter_count(), u64::MAX);
    assert_eq!(MlpConfig { hidden_dim: usize::MAX, ..MlpConfig::toy_2d() }.parameter_count(), u64::MAX);
    let deep = UNetConfig { num_res_blocks: 1 << 40, ..UNetConfig::default() };
    assert!(deep.validate().unwrap_err().to_string().contains("num_res_blocks"));
    let many_levels = UNetConfig { channel_mults: vec![1; 65], ..UNetConfig::default() };
    assert!(many_levels.validate().unwrap_err().to_string().contains("image_size"));
    Ok(())
}

#[test]
fn tiny_unet_is_the_small_model_its_docs_describe() -> Result<()> {
    // 1x8x8 images, base 8, levels (1, 2) at 8 and 4, attention only at 4, sinusoid
    // of 8 into a time embedding of 16, GroupNorm with 4 groups: the fast tests are
    // fast because the model is this small.
    let unet = UNet::<f32>::new(&UNetConfig::tiny(), &mut rng(0))?;
    let dims = |name: &str| unet.named_params().into_iter().find(|(n, _)| n == name).map(|(_, p)| p.dims().to_vec());
    assert_eq!(dims("input_conv.weight"), Some(vec![8, 1, 3, 3]));
    assert_eq!(dims("time_embed.linear1.weight"), Some(vec![16, 8]));
    assert_eq!(dims("down.1.res.0.conv1.weight"), Some(vec![16, 8, 3, 3]));
    assert_eq!(dims("down.1.attn.0.qkv.weight"), Some(vec![48, 16, 1, 1]));
    assert_eq!(dims("down.0.attn.0.qkv.weight"), None);
    assert_eq!(dims("down.2.res.0.conv1.weight"), None);
    assert_eq!(unet.down[0].res[0].norm1.groups, 4);
    Ok(())
}

#[test]
fn default_unet_forward_is_about_35_5_gflop_for_a_batch_of_64() -> Result<()> {
    let unet = UNet::<f32>::new(&UNetConfig::default(), &mut rng(0))?;
    let flops = unet.flops_forward(64);
    assert!((flops / 35.5e9 - 1.0).abs() < 0.01, "{flops:e}");
    // Linear in the batch size.
    assert!((unet.flops_forward(128) / flops - 2.0).abs() < 1e-3);
    Ok(())
}

#[test]
fn unet_flops_are_twice_the_multiply_adds_counted_from_the_weights() -> Result<()> {
    // Every weight does one multiply-add per output position: a convolution's
    // [K, C, kh, kw] at each of the s^2 pixels of its output map, a linear layer's
    // [out, in] once a sample. The side s follows from the name: level L runs at
    // image_size / 2^L, a downsample writes the level below, an upsample the level
    // above, the middle runs at the deepest level. Attention adds its two products,
    // L^2 C multiply-adds each, with L = s^2 and C the qkv conv's input channels.
    for config in [UNetConfig::tiny(), UNetConfig::default()] {
        let unet = UNet::<f32>::new(&config, &mut rng(0))?;
        let side = |level: usize| config.image_size >> level;
        let mut macs = 0;
        for (name, weight) in unet.named_params() {
            if !name.ends_with(".weight") || weight.rank() == 1 {
                continue; // biases, and the scales of the norms
            }
            let parts: Vec<&str> = name.split('.').collect();
            let level = || parts[1].parse::<usize>().expect("a level index");
            let s = match (parts[0], parts.get(2).copied().unwrap_or("")) {
                ("down", "downsample") => side(level() + 1),
                ("up", "upsample") => side(level() - 1),
                ("down" | "up", _) => side(level()),
                ("mid", _) => side(config.channel_mults.len() - 1),
                _ => side(0), // input_conv, out.conv, and the time embedding's linear layers
            };
            let positions = if weight.rank() == 4 { s * s } else { 1 };
            macs += positions * weight.elem_count();
            if name.ends_with("qkv.weight") {
                macs += 2 * (s * s) * (s * s) * weight.dims()[1];
            }
        }
        assert_eq!(unet.flops_forward(3), 2.0 * (3 * macs) as f64, "{config:?}");
    }
    Ok(())
}

#[test]
fn parameter_names_are_unique_hierarchical_and_in_forward_order() -> Result<()> {
    let unet = UNet::<f32>::new(&UNetConfig::default(), &mut rng(0))?;
    let names: Vec<String> = unet.named_params().into_iter().map(|(n, _)| n).collect();
    let unique: HashSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "duplicate parameter names");
    assert_eq!(names[0], "time_embed.linear1.weight");
    assert_eq!(names[4], "input_conv.weight");
    assert_eq!(names.last().map(String::as_str), Some("out.conv.bias"));
    for expected in [
        "down.0.res.1.conv1.weight",
        "down.2.attn.1.qkv.bias",
        "down.1.downsample.conv.weight",
        "mid.attn.proj.weight",
        "up.2.res.0.skip.weight",
        "up.1.upsample.conv.bias",
        "up.0.res.2.time_proj.weight",
    ] {
        assert!(names.iter().any(|n| n == expected), "no parameter {expected}");
    }
    // No attention outside the 7x7 level, no downsample at the last level.
    assert!(!names.iter().any(|n| n.starts_with("down.0.attn") || n.starts_with("up.1.attn") || n.starts_with("down.2.downsample")));
    // The way down comes before the middle, which comes before the way up.
    let first = |prefix: &str| names.iter().position(|n| n.starts_with(prefix)).unwrap();
    assert!(first("down.2") < first("mid.") && first("mid.") < first("up.2") && first("up.2") < first("up.0"));
    // Stable: a second model, and a second walk, give the same list.
    let again: Vec<String> = UNet::<f32>::new(&UNetConfig::default(), &mut rng(9))?.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, again);
    Ok(())
}

#[test]
fn visit_params_mut_walks_the_same_order_as_visit_params() -> Result<()> {
    let mut unet = UNet::<f32>::new(&UNetConfig::tiny(), &mut rng(0))?;
    let names: Vec<String> = unet.named_params().into_iter().map(|(n, _)| n).collect();
    let mut mut_names = Vec::new();
    unet.visit_params_mut("", &mut |n, _| mut_names.push(n.to_string()));
    assert_eq!(names, mut_names);
    let mut prefixed = Vec::new();
    unet.visit_params("ema", &mut |n, _| prefixed.push(n.to_string()));
    assert_eq!(prefixed[0], format!("ema.{}", names[0]));
    Ok(())
}

#[test]
fn every_parameter_requires_grad_and_norms_start_as_identity() -> Result<()> {
    let unet = UNet::<f32>::new(&UNetConfig::tiny(), &mut rng(0))?;
    for (name, p) in unet.named_params() {
        assert!(p.requires_grad_flag(), "{name}");
        if name.contains("norm") {
            let expected = if name.ends_with("weight") { 1.0 } else { 0.0 };
            assert!(p.to_vec().iter().all(|&v| v == expected), "{name}");
        }
    }
    Ok(())
}

#[test]
fn initialisation_is_pytorch_default_uniform_within_one_over_sqrt_fan_in() -> Result<()> {
    let unet = UNet::<f64>::new(&UNetConfig::default(), &mut rng(0))?;
    let [weight, bias] = [&unet.input_conv.weight, &unet.input_conv.bias];
    // fan_in = C kh kw = 1 * 3 * 3 = 9: U(-1/3, 1/3).
    for v in weight.to_vec().into_iter().chain(bias.to_vec()) {
        assert!(v.abs() <= 1.0 / 3.0);
    }
    // The variance of U(-b, b) is b^2 / 3; check it on a large weight.
    let w = unet.down[1].res[1].conv1.weight.to_vec(); // [64, 64, 3, 3], fan_in 576
    let var = w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
    let expected = 1.0 / 576.0 / 3.0;
    assert!((var / expected - 1.0).abs() < 0.02, "{var} vs {expected}");
    Ok(())
}

#[test]
fn same_seed_gives_the_same_model_and_different_seeds_differ() -> Result<()> {
    let config = UNetConfig::tiny();
    let values = |seed| -> Result<Vec<f32>> {
        Ok(UNet::<f32>::new(&config, &mut rng(seed))?.named_params().iter().flat_map(|(_, p)| p.to_vec()).collect())
    };
    assert_eq!(values(5)?, values(5)?);
    assert_ne!(values(5)?, values(6)?);
    Ok(())
}

#[test]
fn a_clone_is_independent_of_its_original() -> Result<()> {
    let unet = UNet::<f32>::new(&UNetConfig::tiny(), &mut rng(0))?;
    let mut copy = unet.clone();
    copy.visit_params_mut("", &mut |_, p| p.update_data(|d| d.iter_mut().for_each(|v| *v = 0.0)));
    assert!(unet.named_params().iter().any(|(_, p)| p.to_vec().iter().any(|&v| v != 0.0)));
    assert!(copy.named_params().iter().all(|(_, p)| p.to_vec().iter().all(|&v| v == 0.0)));
    Ok(())
}

/// Asserts that `result` is `op`'s own `ShapeMismatch` (not an error of a layer
/// further in) and that its message names the input's shape `dims`.
fn assert_refused_by(result: Result<Tensor<f32>>, op: &str, dims: &[usize], why: &str) {
    match result {
        Err(Error::ShapeMismatch { op: by, msg }) if by == op => assert!(msg.contains(&format!("{dims:?}")), "{why}: {msg}"),
        other => panic!("{why}: expected {op}'s ShapeMismatch, got {other:?}"),
    }
}

#[test]
fn unet_keeps_the_input_shape_and_rejects_wrong_inputs() -> Result<()> {
    let unet = UNet::<f32>::new(&UNetConfig::tiny(), &mut rng(0))?;
    let x = Tensor::randn(&[3, 1, 8, 8], &mut rng(1));
    let eps = no_grad(|| unet.forward(&x, &[0, 10, 999]))?;
    assert_eq!(eps.dims(), &[3, 1, 8, 8]);
    assert!(eps.all_finite());
    // Each sample's prediction depends on its own timestep.
    let eps_again = no_grad(|| unet.forward(&x, &[0, 11, 999]))?.to_vec();
    assert_eq!(eps.to_vec()[..64], eps_again[..64]);
    assert_ne!(eps.to_vec()[64..128], eps_again[64..128]);
    // Each way to be wrong on its own is refused by the UNet's own check, before any
    // layer sees the input, with the shapes in the message.
    let wrong: [(&[usize], usize, &str); 6] = [
        (&[3, 1, 8, 8], 2, "two timesteps for three images"),
        (&[3, 2, 8, 8], 3, "two channels"),
        (&[3, 1, 7, 8], 3, "a height of 7 does not halve evenly"),
        (&[3, 1, 8, 5], 3, "a width of 5 does not halve evenly"),
        (&[3, 1, 7, 7], 3, "neither side halves evenly"),
        (&[3, 64], 3, "not an image"),
    ];
    for (dims, timesteps, why) in wrong {
        let t: Vec<usize> = (0..timesteps).collect();
        assert_refused_by(unet.forward(&Tensor::zeros(dims), &t), "UNet::forward", dims, why);
    }
    Ok(())
}

#[test]
fn default_unet_maps_a_mnist_batch_to_noise_of_the_same_shape() -> Result<()> {
    let unet = UNet::<f32>::new(&UNetConfig::default(), &mut rng(0))?;
    let x = Tensor::randn(&[2, 1, 28, 28], &mut rng(1));
    let eps = no_grad(|| unet.forward(&x, &[0, 999]))?;
    assert_eq!(eps.dims(), &[2, 1, 28, 28]);
    assert!(eps.all_finite());
    Ok(())
}

#[test]
fn unet_rejects_configurations_that_do_not_fit() {
    let bad = UNetConfig { groups: 3, ..UNetConfig::tiny() };
    assert!(UNet::<f32>::new(&bad, &mut rng(0)).is_err());
}

#[test]
fn mlp_denoiser_for_toy_data_and_flattened_mnist() -> Result<()> {
    let toy = MlpDenoiser::<f32>::new(&MlpConfig::toy_2d(), &mut rng(0))?;
    // (2 + 32) * 128 + 128 + 2 * (128 * 128 + 128) + 128 * 2 + 2
    assert_eq!(toy.num_params(), 34 * 128 + 128 + 2 * (128 * 128 + 128) + 128 * 2 + 2);
    let names: Vec<String> = toy.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "input.weight",
            "input.bias",
            "hidden.0.weight",
            "hidden.0.bias",
            "hidden.1.weight",
            "hidden.1.bias",
            "output.weight",
            "output.bias"
        ]
    );
    let mnist = MlpDenoiser::<f32>::new(&MlpConfig { hidden_dim: 64, ..MlpConfig::mnist() }, &mut rng(0))?;
    let x = Tensor::randn(&[2, 1, 28, 28], &mut rng(1));
    assert_eq!(mnist.forward(&x, &[5, 6])?.dims(), &[2, 1, 28, 28]);
    // Each way to be wrong on its own is refused by the model's own check. A model
    // of 1-D data shows the rank check alone: a rank-1 x_t has the right count.
    let line = MlpDenoiser::<f32>::new(&MlpConfig { data_dim: 1, ..MlpConfig::toy_2d() }, &mut rng(0))?;
    assert_eq!(line.forward(&Tensor::zeros(&[2, 1]), &[5, 6])?.dims(), &[2, 1]);
    let wrong: [(&MlpDenoiser<f32>, &[usize], usize, &str); 3] = [
        (&toy, &[2, 1, 28, 28], 2, "784 values per sample for a 2-D model"),
        (&toy, &[2, 2], 3, "three timesteps for two samples"),
        (&line, &[2], 2, "a batch of scalars without a sample axis"),
    ];
    for (model, dims, timesteps, why) in wrong {
        let t: Vec<usize> = (0..timesteps).collect();
        assert_refused_by(model.forward(&Tensor::zeros(dims), &t), "MlpDenoiser::forward", dims, why);
    }
    Ok(())
}

#[test]
fn dropout_is_the_identity_in_eval_mode_and_keeps_the_mean_in_training() -> Result<()> {
    let mut dropout = Dropout::new(0.25, &mut rng(0))?;
    let x = Tensor::<f64>::ones(&[100_000]);
    let y = dropout.forward(&x)?.to_vec();
    // Each entry is 0 or 1 / (1 - p); the mean stays 1 (std of the estimate ~0.002).
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-12));
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    assert!((mean - 1.0).abs() < 0.01, "{mean}");
    Module::<f64>::set_mode(&mut dropout, Mode::Eval);
    assert_eq!(dropout.forward(&x)?.to_vec(), x.to_vec());
    Ok(())
}

#[test]
fn set_mode_reaches_the_dropout_inside_the_unet() -> Result<()> {
    let config = UNetConfig { dropout: 0.5, ..UNetConfig::tiny() };
    let mut unet = UNet::<f32>::new(&config, &mut rng(0))?;
    let x = Tensor::randn(&[1, 1, 8, 8], &mut rng(1));
    let train_a = no_grad(|| unet.forward(&x, &[3]))?.to_vec();
    let train_b = no_grad(|| unet.forward(&x, &[3]))?.to_vec();
    assert_ne!(train_a, train_b, "fresh masks on every training forward");
    unet.set_mode(Mode::Eval);
    let eval_a = no_grad(|| unet.forward(&x, &[3]))?.to_vec();
    let eval_b = no_grad(|| unet.forward(&x, &[3]))?.to_vec();
    assert_eq!(eval_a, eval_b);
    Ok(())
}

#[test]
fn load_named_params_restores_a_model_and_rejects_mismatches() -> Result<()> {
    let source = UNet::<f32>::new(&UNetConfig::tiny(), &mut rng(1))?;
    let mut target = UNet::<f32>::new(&UNetConfig::tiny(), &mut rng(2))?;
    let named = source.named_params();
    target.load_named_params(&named)?;
    let x = Tensor::randn(&[2, 1, 8, 8], &mut rng(3));
    assert_eq!(no_grad(|| source.forward(&x, &[1, 2]))?.to_vec(), no_grad(|| target.forward(&x, &[1, 2]))?.to_vec());
    assert!(target.named_params().iter().all(|(_, p)| p.requires_grad_flag()));
    let missing = &named[1..];
    assert!(target.load_named_params(missing).unwrap_err().to_string().contains(&named[0].0));
    let mut extra = named.clone();
    extra.push(("ghost.weight".to_string(), Tensor::zeros(&[1])));
    assert!(target.load_named_params(&extra).unwrap_err().to_string().contains("ghost.weight"));
    let mut reshaped = named.clone();
    reshaped[0].1 = reshaped[0].1.reshape(&[reshaped[0].1.elem_count()])?;
    let error = target.load_named_params(&reshaped).unwrap_err().to_string();
    assert!(error.contains(&named[0].0) && error.contains("in the model but"), "{error}");
    let mut twice = named.clone();
    twice.push(named[0].clone());
    let error = target.load_named_params(&twice).unwrap_err().to_string();
    assert!(error.contains(&named[0].0) && error.contains("given twice"), "{error}");
    Ok(())
}
