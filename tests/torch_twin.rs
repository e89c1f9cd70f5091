//! The engine and its PyTorch twin (`benches/torch/twin.py`) are the same
//! function, checked both ways on tiny models:
//! - same weights -> same eps_theta(x_t, t) at several t, UNet and MLP
//!   (relative L2 error <= 1e-5; float32 rounding alone gives ~1e-7);
//! - same weights and (x_0, t, eps) -> same L_simple (and hybrid loss) and the
//!   same gradients of the first and the last layers (relative error <= 1e-4: a
//!   gradient sums thousands of float32 products in another order);
//! - a file trained by the twin's `train.py` opens here (`ddpm info`), and DDIM
//!   from the same x_T gives the twin's own samples (max |diff| <= 1e-4 in
//!   [-1, 1] after 10 steps);
//! - `train.py --preset quick` and `--preset course` start from the configs of
//!   `ddpm train`'s presets.
//!
//! Torch is optional: these run when `DDPM_TORCH_PYTHON` names a Python with
//! torch and safetensors (see benches/torch/README.md), and otherwise print
//! a skip message and pass.

use course::run::config::{Preset, TrainConfig};
use ddpm::sampler::{sample_ddim, DdimOptions};
use ddpm::schedule::{evenly_spaced_timesteps, BetaSchedule, NoiseSchedule};
use ddpm::{training_losses, LossKind, Parameterization, TrainingOptions, VarianceKind};
use nn::safetensors::{NamedTensor, SafeTensors, TensorData};
use nn::{Checkpoint, MlpConfig, MlpDenoiser, Module, UNet, UNetConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tensor::{rng, Tensor};

const TIMESTEPS: usize = 50;

fn python() -> Option<String> {
    match std::env::var("DDPM_TORCH_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!("SKIPPED: set DDPM_TORCH_PYTHON to a Python with torch to compare the engine with its PyTorch twin (benches/torch/README.md)");
            None
        }
    }
}

fn torch_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches").join("torch")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-torch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_script(python: &str, script: &str, args: &[&str]) {
    let out = Command::new(python).arg(torch_dir().join(script)).args(args).output().expect("the Python named by DDPM_TORCH_PYTHON runs");
    assert!(
        out.status.success(),
        "{script} {args:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A run config as `ddpm train` writes it, for the model `model` (a JSON object with `kind`).
fn run_config(model: serde_json::Value) -> String {
    serde_json::json!({
        "data": "mnist", "model": model, "schedule": "linear", "timesteps": TIMESTEPS, "loss": "simple",
        "hybrid_lambda": 0.001, "variance": "fixed-large", "prediction": "eps", "batch": 4, "lr": 1e-3,
        "warmup": 1, "grad_clip": 1.0, "ema_decay": 0.9, "steps": 1, "time_budget": 0.0, "seed": 0,
        "checkpoint_every": 1, "sample_every": 0, "samples": 4
    })
    .to_string()
}

fn save_checkpoint(path: &Path, model: &dyn Module<f32>, config: String) {
    let metadata = BTreeMap::from([
        ("format".to_string(), "diffusion-course-checkpoint-1".to_string()),
        ("config".to_string(), config),
        ("step".to_string(), "0".to_string()),
    ]);
    Checkpoint { model: model.named_params(), ema: Vec::new(), optimizer: Vec::new(), metadata }.save(path).unwrap();
}

fn save_inputs(path: &Path, tensors: &[(&str, &Tensor<f32>)], timesteps: &[usize]) {
    let mut named: Vec<NamedTensor> = tensors
        .iter()
        .map(|(name, t)| NamedTensor { name: (*name).to_string(), shape: t.dims().to_vec(), data: TensorData::F32(t.to_vec()) })
        .collect();
    named.push(NamedTensor {
        name: "t".into(),
        shape: vec![timesteps.len()],
        data: TensorData::F64(timesteps.iter().map(|&t| t as f64).collect()),
    });
    SafeTensors { tensors: named, metadata: BTreeMap::new() }.save(path).unwrap();
}

fn read(path: &Path, name: &str) -> Vec<f64> {
    let file = SafeTensors::load(path).unwrap();
    match &file.get(name).unwrap_or_else(|| panic!("{} has no tensor {name}", path.display())).data {
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::F64(v) => v.clone(),
    }
}

/// |a - b|_2 / |b|_2.
fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    (diff / b.iter().map(|y| y * y).sum::<f64>()).sqrt()
}

fn to_f64(t: &Tensor<f32>) -> Vec<f64> {
    t.to_vec().iter().map(|&x| f64::from(x)).collect()
}

/// Timesteps spread over the schedule, the first and last included.
const T_EVAL: [usize; 4] = [0, 7, 25, TIMESTEPS - 1];

#[test]
fn same_weights_give_the_same_eps_at_several_t() {
    let Some(python) = python() else { return };
    let dir = scratch("eps");
    let mut r = rng(11);
    let unet_config = UNetConfig::tiny(); // 8x8, two levels, attention at 4
    let unet = UNet::<f32>::new(&unet_config, &mut r).unwrap();
    let mut model_json = serde_json::to_value(&unet_config).unwrap();
    model_json["kind"] = "unet".into();
    let x = Tensor::<f32>::randn(&[4, 1, 8, 8], &mut r);
    let mlp_config = MlpConfig { data_dim: 12, hidden_dim: 32, depth: 3, time_embed_dim: 8 };
    let mlp = MlpDenoiser::<f32>::new(&mlp_config, &mut r).unwrap();
    let mut mlp_json = serde_json::to_value(&mlp_config).unwrap();
    mlp_json["kind"] = "mlp".into();
    let x_mlp = Tensor::<f32>::randn(&[4, 12], &mut r);

    // (name, model, its config, an input)
    type Case<'a> = (&'a str, &'a dyn Module<f32>, serde_json::Value, &'a Tensor<f32>);
    let cases: [Case; 2] = [("unet", &unet, model_json, &x), ("mlp", &mlp, mlp_json, &x_mlp)];
    for (name, model, json, x) in cases {
        let (ckpt, inputs, out) = (
            dir.join(format!("{name}.safetensors")),
            dir.join(format!("{name}-in.safetensors")),
            dir.join(format!("{name}-out.safetensors")),
        );
        save_checkpoint(&ckpt, model, run_config(json));
        save_inputs(&inputs, &[("x", x)], &T_EVAL);
        run_script(&python, "check_twin.py", &["eps", ckpt.to_str().unwrap(), inputs.to_str().unwrap(), out.to_str().unwrap()]);
        let ours = if name == "unet" { unet.forward(x, &T_EVAL).unwrap() } else { mlp.forward(x, &T_EVAL).unwrap() };
        let theirs = read(&out, "eps");
        // Per timestep: each batch item has its own t.
        let per_item = x.elem_count() / T_EVAL.len();
        let ours = to_f64(&ours);
        for (i, t) in T_EVAL.iter().enumerate() {
            let range = i * per_item..(i + 1) * per_item;
            let err = relative_error(&ours[range.clone()], &theirs[range]);
            eprintln!("{name} t = {t}: relative error of eps {err:.2e}");
            assert!(err <= 1e-5, "{name} at t = {t}: relative error {err:e}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// L_simple, and the hybrid loss L_simple + lambda T L_t whose bound term runs
/// through the posterior, the KL and (at t = 0) the discretised decoder, for a
/// network that predicts the noise and for one that predicts the velocity.
#[test]
fn same_weights_and_noise_give_the_same_loss_and_gradients() {
    let Some(python) = python() else { return };
    let dir = scratch("loss");
    let mut r = rng(12);
    let config = UNetConfig::tiny();
    let unet = UNet::<f32>::new(&config, &mut r).unwrap();
    let mut json = serde_json::to_value(&config).unwrap();
    json["kind"] = "unet".into();
    let x0 = Tensor::<f32>::rand_uniform(&[4, 1, 8, 8], -1.0, 1.0, &mut r);
    let noise = Tensor::<f32>::randn(&[4, 1, 8, 8], &mut r);
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, TIMESTEPS).unwrap();
    let cases = [
        ("simple", LossKind::Simple, "eps", Parameterization::Epsilon),
        ("hybrid", LossKind::Hybrid, "eps", Parameterization::Epsilon),
        ("simple", LossKind::Simple, "v", Parameterization::Velocity),
        ("hybrid", LossKind::Hybrid, "v", Parameterization::Velocity),
    ];
    for (loss_name, loss_kind, prediction, parameterization) in cases {
        let name = format!("{loss_name}-{prediction}");
        let (ckpt, inputs, out) =
            (dir.join(format!("{name}.safetensors")), dir.join("in.safetensors"), dir.join(format!("{name}-out.safetensors")));
        let mut run = serde_json::from_str::<serde_json::Value>(&run_config(json.clone())).unwrap();
        run["loss"] = loss_name.into();
        run["prediction"] = prediction.into();
        save_checkpoint(&ckpt, &unet, run.to_string());
        save_inputs(&inputs, &[("x0", &x0), ("noise", &noise)], &T_EVAL);
        run_script(&python, "check_twin.py", &["loss", ckpt.to_str().unwrap(), inputs.to_str().unwrap(), out.to_str().unwrap()]);

        let options =
            TrainingOptions { loss: loss_kind, parameterization, variance: VarianceKind::FixedLarge, ..TrainingOptions::default() };
        let predict = |x: &Tensor<f32>, t: &[usize]| unet.forward(x, t).map_err(nn::Error::into_tensor_error);
        let loss = training_losses(&schedule, &predict, &x0, &T_EVAL, &noise, options).unwrap().loss;
        let ours = f64::from(loss.item().unwrap());
        let theirs = read(&out, "loss")[0];
        eprintln!("{name} loss: engine {ours:.8}, twin {theirs:.8}");
        assert!((ours - theirs).abs() <= 1e-5 * theirs.abs(), "{name} loss {ours} vs {theirs}");
        let grads = loss.backward().unwrap();
        // The first layers the input and the time meet, and the last one it leaves by.
        for param_name in ["input_conv.weight", "input_conv.bias", "time_embed.linear1.weight", "out.conv.weight", "out.conv.bias"] {
            let param = unet.named_params().into_iter().find(|(n, _)| n == param_name).unwrap().1;
            let ours = to_f64(grads.get(&param).unwrap_or_else(|| panic!("no gradient for {param_name}")));
            let err = relative_error(&ours, &read(&out, &format!("grad.{param_name}")));
            eprintln!("d {name} / d {param_name}: relative error {err:.2e}");
            assert!(err <= 1e-4, "{name}, {param_name}: relative error {err:e}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_twin_trained_file_samples_here_as_in_the_twin() {
    let Some(python) = python() else { return };
    let dir = scratch("ddim");
    let run_dir = dir.join("run");
    // Three steps of the twin's trainer in one process: the file format and the
    // EMA are what matter here, not the quality.
    run_script(
        &python,
        "train.py",
        &[
            "--out",
            run_dir.to_str().unwrap(),
            "--base-channels",
            "8",
            "--channel-mults",
            "1,2",
            "--attention-resolutions",
            "14",
            "--groups",
            "4",
            "--timesteps",
            &TIMESTEPS.to_string(),
            "--batch",
            "4",
            "--warmup",
            "2",
            "--ema-decay",
            "0.5",
            "--steps",
            "3",
            "--checkpoint-every",
            "3",
            "--threads",
            "1",
        ],
    );
    let ckpt = run_dir.join("checkpoint.safetensors");

    // The program opens it: config, step and both sets of weights.
    let info = Command::new(env!("CARGO_BIN_EXE_ddpm")).args(["info", "--checkpoint", ckpt.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "{text}\n{}", String::from_utf8_lossy(&info.stderr));
    assert!(text.contains("step 3") && text.contains("EMA weights: yes"), "{text}");

    let loaded = Checkpoint::<f32>::load(&ckpt).unwrap();
    let config: serde_json::Value = serde_json::from_str(&loaded.metadata["config"]).unwrap();
    let unet_config: UNetConfig = serde_json::from_value(config["model"].clone()).unwrap();
    let mut unet = UNet::<f32>::new(&unet_config, &mut rng(0)).unwrap();
    unet.load_named_params(&loaded.ema).unwrap();

    let (seed, count, steps) = (5, 3, 10);
    let shape = [count, 1, 28, 28];
    // sample_ddim draws x_T first from its generator; with eta = 0 nothing else is random.
    let x_t = Tensor::<f32>::randn(&shape, &mut rng(seed));
    let inputs = dir.join("in.safetensors");
    let steps_tensor = Tensor::<f32>::from_vec(vec![steps as f32], &[1]).unwrap();
    save_inputs(&inputs, &[("x_T", &x_t), ("steps", &steps_tensor)], &[]);
    let out = dir.join("out.safetensors");
    run_script(&python, "check_twin.py", &["ddim", ckpt.to_str().unwrap(), inputs.to_str().unwrap(), out.to_str().unwrap()]);

    let schedule = NoiseSchedule::new(BetaSchedule::Linear, TIMESTEPS).unwrap();
    let kept = evenly_spaced_timesteps(TIMESTEPS, steps).unwrap();
    let options = DdimOptions { eta: 0.0, parameterization: Parameterization::Epsilon, clip_denoised: true };
    let predict = |x: &Tensor<f32>, t: &[usize]| unet.forward(x, t).map_err(nn::Error::into_tensor_error);
    let ours = to_f64(&sample_ddim(&schedule, &predict, &shape, &kept, options, &[], &mut rng(seed)).unwrap().sample);
    let theirs = read(&out, "sample");
    let max_diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    eprintln!("DDIM-{steps} from the same x_T: max |engine - twin| = {max_diff:.2e}");
    assert!(max_diff <= 1e-4, "max |diff| {max_diff:e}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `train.py --preset P` writes the config `ddpm train --preset P` starts from: the
/// twin's presets are a copy of `TrainConfig::preset` (Python cannot read the Rust
/// ones), and this holds the copy equal. The twin draws no sample grids, so its
/// `sample_every` is 0 whatever the preset.
#[test]
fn the_twin_s_presets_are_the_program_s() {
    let Some(python) = python() else { return };
    for (name, preset) in [("quick", Preset::Quick), ("course", Preset::Course)] {
        let code = format!(
            "import json, sys; sys.path.insert(0, {dir:?}); sys.argv = ['train.py', '--out', 'unused', '--preset', '{name}']; \
             import train; print(json.dumps(train.run_config(train.parse_args())))",
            dir = torch_dir().to_str().unwrap()
        );
        let out = Command::new(&python).args(["-c", &code]).output().expect("the Python named by DDPM_TORCH_PYTHON runs");
        assert!(out.status.success(), "train.py --preset {name}: {}", String::from_utf8_lossy(&out.stderr));
        let twin: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ours = TrainConfig { sample_every: 0, ..TrainConfig::preset(preset) };
        assert_eq!(twin, serde_json::to_value(&ours).unwrap(), "--preset {name}");
    }
}
