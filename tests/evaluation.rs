//! Measuring what a model learned: the shipped classifier, `ddpm eval`,
//! `ddpm export` and `ddpm ablation` end to end on a tiny UNet.

use course::data::mnist::{Mnist, Split};
use std::path::PathBuf;
use std::process::{Command, Output};

fn ddpm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddpm")).args(args).output().expect("the ddpm binary runs")
}

fn ok(out: &Output) -> String {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "exit {:?}\nstdout: {stdout}\nstderr: {stderr}", out.status.code());
    stdout.into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-eval-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_shipped_classifier_recognises_99_percent_of_the_test_set() {
    let classifier = course::eval::classifier::load(&course::eval::classifier::default_path()).unwrap();
    let test = Mnist::load(Mnist::default_dir(), Split::Test).unwrap();
    let accuracy = course::eval::classifier::accuracy(&classifier, &test).unwrap();
    assert!(accuracy >= 0.99, "test accuracy {accuracy}");
}

/// Real digits are the ceiling of every figure: scored as if they were samples,
/// 1,000 training images are nearly all recognisable, their classes nearly
/// uniform, and their FID is at the floor (both are real-vs-real distances).
/// The 1,000 are a seeded random subset: a contiguous block of a split is not a
/// random sample of it (test[0..1000] scores a higher FID than good samples).
#[test]
fn real_digits_score_at_the_ceiling() {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let judge =
        course::eval::judge::Judge::new(course::eval::classifier::load(&course::eval::classifier::default_path()).unwrap()).unwrap();
    let train = Mnist::load(Mnist::default_dir(), Split::Train).unwrap();
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(2024));
    let images = train.gather_images(&order[..1000]).unwrap();
    let report = judge.score(&images, 0).unwrap();
    assert!(report.recognisable > 0.95, "{report:?}");
    assert!((report.class_entropy - 10f64.ln()).abs() < 0.02 * 10f64.ln(), "{report:?}");
    assert!(report.fid < 2.0 * report.fid_floor.max(0.1), "{report:?}");
    // The standard errors are those of 1,000 draws: binomial, under a percent for a
    // fraction near 1; the FID's bootstrap error is positive and below the FID.
    assert!(report.recognisable_stderr > 0.0 && report.recognisable_stderr < 0.01, "{report:?}");
    assert!(report.class_entropy_stderr < 0.02, "{report:?}");
    assert!(report.fid_stderr > 0.0 && report.fid_stderr < report.fid, "{report:?}");
    // Noise is not a digit: its FID is far above the floor.
    let noise: Vec<f32> = (0..1000 * 784usize).map(|i| if (i * 7919) % 13 < 6 { 1.0 } else { -1.0 }).collect();
    let noise_report = judge.score(&noise, 0).unwrap();
    assert!(noise_report.fid > 20.0 * report.fid.max(0.1), "noise {noise_report:?} vs real {report:?}");
}

#[test]
fn eval_export_and_ablation_end_to_end() {
    let dir = scratch("all");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    ok(&ddpm(&[
        "train",
        "--run",
        run_s,
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
        "--steps",
        "3",
        "--quiet",
    ]));
    // A reader that closes the pipe early gets no panic.
    let mut info = Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(["info", "--checkpoint", run_s])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(info.stdout.take());
    let closed = info.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&closed.stderr).contains("panicked"), "{}", String::from_utf8_lossy(&closed.stderr));
    // Export: a quarter of the size, and it samples exactly like the run's EMA weights.
    let exported = dir.join("small.safetensors");
    ok(&ddpm(&["export", "--checkpoint", run_s, "--out", exported.to_str().unwrap()]));
    let (big, small) = (std::fs::metadata(run.join("checkpoint.safetensors")).unwrap().len(), std::fs::metadata(&exported).unwrap().len());
    assert!(small * 3 < big, "export {small} bytes vs checkpoint {big}");
    // Both carry EMA weights: the run in its `ema.` part, the export as its model
    // tensors (metadata `weights=ema`).
    let ema_line = |checkpoint: &str| {
        ok(&ddpm(&["info", "--checkpoint", checkpoint])).lines().find(|l| l.starts_with("EMA weights")).map(str::to_string)
    };
    let run_line = ema_line(run_s).unwrap();
    assert!(run_line.starts_with("EMA weights: yes; "), "{run_line}");
    let exported_line = ema_line(exported.to_str().unwrap()).unwrap();
    assert!(
        exported_line.starts_with("EMA weights: yes (exported") && exported_line.ends_with("optimizer state tensors: 0"),
        "{exported_line}"
    );
    let eval = |checkpoint: &str| ok(&ddpm(&["eval", "--checkpoint", checkpoint, "--samples", "6", "--steps", "5", "--json"]));
    let (from_run, from_export) = (eval(run_s), eval(exported.to_str().unwrap()));
    assert_eq!(from_run, from_export);
    let report: serde_json::Value = serde_json::from_str(&from_run).unwrap();
    assert_eq!(report["samples"], 6);
    // It names what drew the samples: DDIM (the default eta 1) over 5 steps, seed 0.
    assert_eq!((report["sampler"].as_str(), report["seed"].as_u64()), (Some("DDIM-5, eta 1"), Some(0)));
    // The same samples, saved for another judge: [N, 1, 28, 28] in [-1, 1], and
    // the same report (the file is a by-product, not another draw).
    let samples_file = dir.join("samples.safetensors");
    let with_file = ok(&ddpm(&[
        "eval",
        "--checkpoint",
        run_s,
        "--samples",
        "6",
        "--steps",
        "5",
        "--json",
        "--samples-out",
        samples_file.to_str().unwrap(),
    ]));
    assert_eq!(with_file, from_run);
    let saved = nn::safetensors::SafeTensors::load(&samples_file).unwrap();
    let samples = saved.get("samples").unwrap();
    assert_eq!(samples.shape, vec![6, 1, 28, 28]);
    let nn::safetensors::TensorData::F32(values) = &samples.data else { panic!("samples are not f32") };
    assert!(values.iter().all(|v| (-1.0..=1.0).contains(v)), "samples outside [-1, 1]");
    assert_eq!(saved.metadata["steps"], "5");
    let r = report["recognisable"].as_f64().unwrap();
    let h = report["class_entropy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&r) && (0.0..=10f64.ln() + 1e-12).contains(&h), "{report}");
    assert!(report["fid"].as_f64().unwrap() >= 0.0 && report["fid_floor"].as_f64().unwrap() >= 0.0, "{report}");
    // A file that is not a classifier is refused, naming the file.
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let bad = ddpm(&["eval", "--checkpoint", run_s, "--steps", "5", "--classifier", exported.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("not a classifier"), "{}", stderr(&bad));
    // Two samples are the fewest the standard errors allow: one is refused before
    // any work, naming the flag. The progress counts model calls: one batch of
    // samples times the sampler's 5 steps.
    let grid = dir.join("grid.png");
    let two = ddpm(&["eval", "--checkpoint", run_s, "--samples", "2", "--steps", "5", "--grid", grid.to_str().unwrap()]);
    // The report names the sampler: DDIM with the default eta 1.
    assert!(ok(&two).starts_with(&format!("{run_s}/checkpoint.safetensors at step 3, DDIM-5, eta 1, sampled in")));
    assert!(stderr(&two).contains("eval: 5/5 model calls"), "{}", stderr(&two));
    // The grid holds the two 28 x 28 samples in one row.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&grid).unwrap()));
    let info = decoder.read_info().unwrap().info().clone();
    assert!(info.width >= 2 * 28 && (28..2 * 28).contains(&info.height), "a grid of {} x {}", info.width, info.height);
    let one = ddpm(&["eval", "--checkpoint", run_s, "--samples", "1", "--steps", "5"]);
    assert_eq!(one.status.code(), Some(2));
    assert!(stderr(&one).contains("--samples") && stderr(&one).contains("from 2 to"), "{}", stderr(&one));
    // The ablation: three runs, four rows, a grid per row.
    let out = dir.join("ablation");
    let table = ok(&ddpm(&[
        "ablation",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "2",
        "--samples",
        "4",
        "--nll-images",
        "2",
        "--base-channels",
        "8",
        "--timesteps",
        "25",
    ]));
    assert_eq!(table.lines().filter(|l| l.starts_with("| L")).count(), 4, "{table}");
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    for slug in ["simple-beta", "simple-beta-tilde", "vlb-beta", "vlb-beta-tilde"] {
        assert!(out.join(format!("{slug}.png")).exists(), "{slug}.png");
    }
    assert!(["simple", "vlb-beta", "vlb-beta-tilde"].iter().all(|r| out.join(r).join("checkpoint.safetensors").exists()));
    let _ = std::fs::remove_dir_all(&dir);
}
