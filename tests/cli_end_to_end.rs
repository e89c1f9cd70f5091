//! The `ddpm` program end to end, on a tiny UNet and a few steps: train,
//! checkpoint, resume (bit-identical to an uninterrupted run), sample, nll, info;
//! bad flags and files give one-line errors with exit code 2; a diverging run stops
//! with exit code 1 naming the step; Ctrl-C saves and exits with code 130.

use nn::Checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A tiny UNet on MNIST: 8 base channels, two levels (28, 14), T = 25.
const TINY: &[&str] = &[
    "--base-channels",
    "8",
    "--channel-mults",
    "1,2",
    "--timesteps",
    "25",
    "--batch",
    "8",
    "--warmup",
    "2",
    "--samples",
    "4",
    "--checkpoint-every",
    "3",
    "--quiet",
];

fn ddpm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddpm")).args(args).output().expect("the ddpm binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn ok(out: &Output) -> String {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "exit {:?}\nstdout: {stdout}\nstderr: {stderr}", out.status.code());
    stdout.into_owned()
}

/// Asserts a one-line error with the given exit code and returns it.
fn fails(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "a panic: {stderr}");
    stderr
}

fn train(run: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--run", run.to_str().unwrap()];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    // A constant rate unless asked, so a run can be resumed to a new length (a cosine one cannot).
    if !extra.contains(&"--lr-schedule") {
        args.extend_from_slice(&["--lr-schedule", "constant"]);
    }
    ddpm(&args)
}

fn bits(c: &[(String, tensor::Tensor<f32>)]) -> Vec<(String, Vec<u32>)> {
    c.iter().map(|(n, t)| (n.clone(), t.to_vec().iter().map(|v| v.to_bits()).collect())).collect()
}

/// The first four columns (step, loss, lr, grad-norm) of metrics.csv; the fifth is throughput.
fn metrics(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.csv")).unwrap().lines().map(|l| l.split(',').take(4).collect::<Vec<_>>().join(",")).collect()
}

#[test]
fn train_resume_sample_nll_info() {
    let (straight, resumed) = (scratch("straight"), scratch("resumed"));
    let summary = ok(&train(&straight, &["--steps", "6"]));
    assert!(summary.starts_with("done at step 6"), "{summary}");
    // The same run in two sessions: 4 steps (checkpoint at 3, then the last at 4),
    // then --resume to 6. Steps after the last checkpoint are never lost.
    ok(&train(&resumed, &["--steps", "4"]));
    ok(&ddpm(&["train", "--run", resumed.to_str().unwrap(), "--resume", "--steps", "6", "--quiet"]));
    let a = Checkpoint::<f32>::load(straight.join("checkpoint.safetensors")).unwrap();
    let b = Checkpoint::<f32>::load(resumed.join("checkpoint.safetensors")).unwrap();
    assert_eq!(bits(&a.model), bits(&b.model), "weights differ after resume");
    assert_eq!(bits(&a.ema), bits(&b.ema), "EMA weights differ after resume");
    assert_eq!(bits(&a.optimizer), bits(&b.optimizer), "optimizer state differs after resume");
    assert_eq!(metrics(&straight), metrics(&resumed));
    for file in ["config.json", "loss.png", "samples.png"] {
        assert!(straight.join(file).exists(), "{file} missing");
    }
    // The run's grid is what `sample` draws by default: DDIM with eta 1, at most 50
    // steps (here all T = 25), seed 0. Eta 0 draws other pictures from the same noise.
    let png = |name: &str, extra: &[&str]| {
        let out = straight.join(name);
        let mut args = vec!["sample", "--checkpoint", straight.to_str().unwrap(), "--count", "4", "--steps", "25"];
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        ok(&ddpm(&args));
        std::fs::read(out).unwrap()
    };
    let grid = std::fs::read(straight.join("samples.png")).unwrap();
    assert!(png("default.png", &[]) == grid, "`sample` with its defaults draws another grid than training");
    assert!(png("eta1.png", &["--eta", "1", "--seed", "0"]) == grid);
    assert!(png("eta0.png", &["--eta", "0"]) != grid, "eta 0 drew the eta-1 grid");

    let (grid, strip) = (resumed.join("grid.png"), resumed.join("trajectory.png"));
    let drawn = ddpm(&[
        "sample",
        "--checkpoint",
        resumed.to_str().unwrap(),
        "--count",
        "4",
        "--steps",
        "20",
        "--out",
        grid.to_str().unwrap(),
        "--trajectory",
        strip.to_str().unwrap(),
    ]);
    let out = ok(&drawn);
    // DDIM-20 of T = 25 keeps the steps round(k 24 / 19); the strip shows ten of
    // them, path indices 0, 2, ..., 16, 19, noisiest first.
    assert!(out.contains("trajectory at t = 24,20,18,15,13,10,8,5,3,0 "), "{out}");
    // One batch of 20 model calls, counted to the end.
    let stderr = String::from_utf8_lossy(&drawn.stderr);
    assert!(stderr.lines().last().is_some_and(|l| l.starts_with("sample: 20/20 model calls (100%)")), "{stderr}");
    // Eight rows (x_t and predicted x_0 for each of four samples) of 11 tiles (ten
    // frames and the final sample), 28 pixels each with a padding between.
    let info = png::Decoder::new(std::fs::File::open(&strip).unwrap()).read_info().unwrap().info().clone();
    let pad = (info.height - 8 * 28) / 9;
    assert!(pad > 0 && info.height == 8 * 28 + 9 * pad && info.width == 11 * 28 + 12 * pad, "{}x{}", info.width, info.height);
    ok(&ddpm(&["sample", "--checkpoint", resumed.to_str().unwrap(), "--sampler", "ddpm", "--count", "2", "--out", grid.to_str().unwrap()]));
    // Ancestral sampling on 20 of the 25 steps: DDIM-20's kept steps, 20 model calls.
    let respaced = |steps: &str| {
        let args = ["sample", "--checkpoint", resumed.to_str().unwrap(), "--sampler", "ddpm", "--steps", steps, "--count", "2"];
        ddpm(&[&args[..], &["--out", grid.to_str().unwrap(), "--trajectory", strip.to_str().unwrap()]].concat())
    };
    let drawn = respaced("20");
    let out = ok(&drawn);
    assert!(out.contains("(ancestral, 20 of 25 steps)") && out.contains("trajectory at t = 24,20,18,15,13,10,8,5,3,0 "), "{out}");
    let stderr = String::from_utf8_lossy(&drawn.stderr);
    assert!(stderr.lines().last().is_some_and(|l| l.starts_with("sample: 20/20 model calls (100%)")), "{stderr}");
    let e = fails(&respaced("26"), 2);
    assert!(
        e.contains("--steps") && e.contains("ancestral sampling keeps") && e.contains("T = 25 of the model's timesteps, got 26"),
        "{e}"
    );
    ok(&ddpm(&[
        "sample",
        "--checkpoint",
        resumed.to_str().unwrap(),
        "--sampler",
        "langevin",
        "--steps",
        "4",
        "--count",
        "2",
        "--out",
        grid.to_str().unwrap(),
    ]));

    let json = ok(&ddpm(&["nll", "--checkpoint", resumed.to_str().unwrap(), "--images", "4", "--batch", "2", "--json"]));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let f = |k: &str| v[k].as_f64().unwrap();
    // The total is the sum of its three terms: L_T + sum L_{t-1} + L_0.
    assert!((f("total_bpd") - (f("prior_bpd") + f("vb_bpd") + f("decoder_bpd"))).abs() < 1e-3 * f("total_bpd"), "{json}");
    assert!(f("total_bpd") > 0.0 && f("prior_bpd") >= 0.0);
    assert!(resumed.join("nll_per_timestep.png").exists());

    let info = ok(&ddpm(&["info", "--checkpoint", resumed.to_str().unwrap()]));
    assert!(info.contains("step 6") && info.contains("parameters") && info.contains("out.conv.weight"), "{info}");
    for dir in [straight, resumed] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn bad_flags_and_files_are_one_line_errors() {
    let dir = scratch("bad");
    std::fs::create_dir_all(&dir).unwrap();
    fails(&ddpm(&["train", "--no-such-flag"]), 2);
    fails(&ddpm(&["train", "--data", "cifar"]), 2);
    let e = fails(&ddpm(&["train", "--batch", "0", "--run", dir.join("r").to_str().unwrap()]), 2);
    assert!(e.contains("--batch"), "{e}");
    let e = fails(&ddpm(&["sample", "--checkpoint", dir.join("missing.safetensors").to_str().unwrap()]), 2);
    assert!(e.contains("does not exist"), "{e}");
    // A file that is not a safetensors file at all, and one of another program.
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let e = fails(&ddpm(&["info", "--checkpoint", junk.to_str().unwrap()]), 2);
    assert!(e.contains("junk.safetensors"), "{e}");
    // A run folder that cannot be made, and a checkpoint interval of 0 steps.
    let e = fails(&ddpm(&["train", "--preset", "toy", "--run", junk.join("r").to_str().unwrap()]), 2);
    assert!(e.contains("--run") && e.contains("junk.safetensors is a file"), "{e}");
    let e = fails(&ddpm(&["train", "--preset", "toy", "--checkpoint-every", "0", "--run", dir.join("r").to_str().unwrap()]), 2);
    assert!(e.contains("--checkpoint-every"), "{e}");
    // Refused settings, weights or data leave no run folder behind.
    let refused = dir.join("refused");
    let e = fails(&ddpm(&["train", "--preset", "toy", "--timesteps", "1", "--run", refused.to_str().unwrap()]), 2);
    assert!(e.contains("--timesteps"), "{e}");
    let e = fails(&ddpm(&["train", "--preset", "toy", "--init", junk.to_str().unwrap(), "--run", refused.to_str().unwrap()]), 2);
    assert!(e.contains("junk.safetensors"), "{e}");
    let e = fails(&ddpm(&["train", "--data-dir", dir.to_str().unwrap(), "--run", refused.to_str().unwrap()]), 2);
    assert!(e.contains("mnist"), "{e}");
    assert!(!refused.exists());
    let other = dir.join("other.safetensors");
    nn::safetensors::SafeTensors::default().save(&other).unwrap();
    let e = fails(&ddpm(&["sample", "--checkpoint", other.to_str().unwrap()]), 2);
    assert!(e.contains("not a checkpoint of this program"), "{e}");
    // An existing run is never overwritten, and its config cannot change on resume.
    let run = dir.join("run");
    ok(&train(&run, &["--steps", "1"]));
    let e = fails(&train(&run, &["--steps", "1"]), 2);
    assert!(e.contains("--resume"), "{e}");
    let e = fails(&ddpm(&["train", "--run", run.to_str().unwrap(), "--resume", "--lr", "0.5"]), 2);
    assert!(e.contains("--lr"), "{e}");
    // A truncated checkpoint names the file.
    let ckpt = run.join("checkpoint.safetensors");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&ddpm(&["info", "--checkpoint", run.to_str().unwrap()]), 2);
    assert!(e.contains("checkpoint.safetensors"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_the_last_checkpoint() {
    let run = scratch("diverge");
    // A learning rate of 1e30 moves every weight by about 1e30 in one Adam step;
    // the next forward overflows.
    let e = fails(&train(&run, &["--steps", "20", "--lr", "1e30", "--grad-clip", "0"]), 1);
    assert!(e.contains("training diverged at step") && e.contains("not finite"), "{e}");
    assert!(e.contains("checkpoint.safetensors") || e.contains("no checkpoint"), "{e}");
    std::fs::remove_dir_all(run).unwrap();
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    let run = scratch("interrupt");
    let mut args = vec!["train".to_string(), "--run".into(), run.to_str().unwrap().into()];
    args.extend(TINY.iter().map(|s| s.to_string()));
    args.extend(["--steps".into(), "100000".into()]);
    let child = Command::new(env!("CARGO_BIN_EXE_ddpm")).args(&args).stdout(std::process::Stdio::piped()).spawn().unwrap();
    // Wait for a few steps, then send SIGINT as Ctrl-C does.
    let started = std::time::Instant::now();
    while metrics_rows(&run) < 3 {
        assert!(started.elapsed().as_secs() < 60, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    // 130 = 128 + SIGINT: an interrupted run is not a success, though it saved.
    fails(&out, 130);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("interrupted at step"), "{stdout}");
    let ckpt = Checkpoint::<f32>::load(run.join("checkpoint.safetensors")).unwrap();
    let step: usize = ckpt.metadata["step"].parse().unwrap();
    assert!((3..100_000).contains(&step) && metrics_rows(&run) == step, "step {step}, rows {}", metrics_rows(&run));
    std::fs::remove_dir_all(run).unwrap();
}

fn metrics_rows(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.csv")).map_or(0, |t| t.lines().count().saturating_sub(1))
}

#[test]
fn toy_run_plots_data_and_samples() {
    let run = scratch("toy");
    let out = ok(&ddpm(&["train", "--preset", "toy", "--steps", "30", "--samples", "50", "--quiet", "--run", run.to_str().unwrap()]));
    assert!(out.contains("samples.png"), "{out}");
    let decoder = png::Decoder::new(std::fs::File::open(run.join("samples.png")).unwrap());
    let info = decoder.read_info().unwrap();
    // Two panels side by side: the data and the samples.
    assert!(info.info().width > 2 * info.info().height, "{}x{}", info.info().width, info.info().height);
    // A trajectory is a strip of images: 2-D points have none.
    let (grid, strip) = (run.join("s.png"), run.join("trajectory.png"));
    let (checkpoint, grid, strip) = (run.to_str().unwrap(), grid.to_str().unwrap(), strip.to_str().unwrap());
    let e = fails(&ddpm(&["sample", "--checkpoint", checkpoint, "--count", "4", "--out", grid, "--trajectory", strip]), 2);
    assert!(e.contains("--trajectory") && e.contains("MNIST"), "{e}");
    std::fs::remove_dir_all(run).unwrap();
}

/// The short-run recipe (cosine learning rate, EMA warm-up, min-SNR) and stratified
/// timesteps resume bit for bit too: the EMA's decay depends on its update count,
/// which the checkpoint keeps, and the sampler is read back from the run's config.
#[test]
fn recipe_options_resume_bit_for_bit_and_fix_the_schedule_length() {
    const RECIPE: &[&str] = &[
        "--lr-schedule",
        "cosine",
        "--ema-warmup",
        "true",
        "--loss-weight",
        "min-snr",
        "--min-snr-gamma",
        "3",
        "--timestep-sampling",
        "stratified",
    ];
    let (straight, resumed) = (scratch("recipe-straight"), scratch("recipe-resumed"));
    ok(&train(&straight, &[RECIPE, &["--steps", "6"]].concat()));
    ok(&train(&resumed, &[RECIPE, &["--steps", "6", "--time-budget", "0.000001"]].concat()));
    let a = Checkpoint::<f32>::load(straight.join("checkpoint.safetensors")).unwrap();
    let b = Checkpoint::<f32>::load(resumed.join("checkpoint.safetensors")).unwrap();
    assert_ne!(bits(&a.ema), bits(&b.ema), "the budget stopped the second run early");
    // A budget stop is announced, and --resume goes on for another budget.
    let out = ok(&ddpm(&["train", "--run", resumed.to_str().unwrap(), "--resume", "--quiet"]));
    assert!(out.contains("stopped early") && out.contains("--time-budget"), "{out}");
    ok(&ddpm(&["train", "--run", resumed.to_str().unwrap(), "--resume", "--quiet", "--time-budget", "0"]));
    let b = Checkpoint::<f32>::load(resumed.join("checkpoint.safetensors")).unwrap();
    assert_eq!(bits(&a.model), bits(&b.model), "weights differ after resume");
    assert_eq!(bits(&a.ema), bits(&b.ema), "EMA weights differ after resume");
    assert_eq!(metrics(&straight), metrics(&resumed));
    let config = std::fs::read_to_string(resumed.join("config.json")).unwrap();
    assert!(config.contains(r#""timestep_sampling": "stratified""#), "{config}");
    // The cosine schedule ends at --steps: a longer resume would bend it mid-run.
    let err = fails(&ddpm(&["train", "--run", resumed.to_str().unwrap(), "--resume", "--steps", "9", "--quiet"]), 2);
    assert!(err.contains("--steps") && err.contains("cosine"), "{err}");
}

/// `--init` starts a new run from a trained model's EMA weights: after one step with
/// EMA decay d, the run's EMA is d w_0 + (1 - d) w_1, so (ema - (1 - d) w_1) / d
/// gives back the exported weights w_0. The run resumes without repeating --init,
/// and a model of another architecture is refused by name.
#[test]
fn init_fine_tunes_from_an_exported_model() {
    let (base, tuned, other) = (scratch("init-base"), scratch("init-tuned"), scratch("init-other"));
    ok(&train(&base, &["--steps", "3"]));
    let exported = base.join("exported.safetensors");
    ok(&ddpm(&["export", "--checkpoint", base.to_str().unwrap(), "--out", exported.to_str().unwrap()]));
    let w0 = Checkpoint::<f32>::load(&exported).unwrap().model;
    ok(&train(
        &tuned,
        &["--init", exported.to_str().unwrap(), "--steps", "1", "--ema-decay", "0.5", "--ema-warmup", "false", "--seed", "7"],
    ));
    let c = Checkpoint::<f32>::load(tuned.join("checkpoint.safetensors")).unwrap();
    assert_eq!(c.model.len(), w0.len());
    let mut moved = 0.0f32;
    for (((name, w1), (_, ema)), (_, w0)) in c.model.iter().zip(&c.ema).zip(&w0) {
        for ((&w1, &ema), &w0) in w1.to_vec().iter().zip(&ema.to_vec()).zip(&w0.to_vec()) {
            let back = (ema - 0.5 * w1) / 0.5;
            assert!((back - w0).abs() <= 1e-5 * (1.0 + w0.abs()), "{name}: {back} vs the exported {w0}");
            moved = moved.max((w1 - w0).abs());
        }
    }
    assert!(moved > 0.0, "the step changed no weight");
    let config = std::fs::read_to_string(tuned.join("config.json")).unwrap();
    assert!(config.contains("exported.safetensors"), "{config}");
    ok(&ddpm(&["train", "--run", tuned.to_str().unwrap(), "--resume", "--steps", "2", "--quiet"]));
    let err =
        fails(&ddpm(&["train", "--run", other.to_str().unwrap(), "--quiet", "--init", exported.to_str().unwrap(), "--steps", "1"]), 2);
    assert!(err.contains("--init") && err.contains("architecture"), "{err}");
    let err = fails(&train(&scratch("init-missing"), &["--init", "no/such/file.safetensors", "--steps", "1"]), 2);
    assert!(err.contains("--init") && err.contains("does not exist"), "{err}");
}
