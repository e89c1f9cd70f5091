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
    let classifier = course::classifier::load(&course::classifier::default_path()).unwrap();
    let test = Mnist::load(Mnist::default_dir(), Split::Test).unwrap();
    let accuracy = course::classifier::accuracy(&classifier, &test).unwrap();
    assert!(accuracy >= 0.99, "test accuracy {accuracy}");
}

/// Real digits are the ceiling of every figure: scored as if they were samples,
/// 1,000 training images are nearly all recognisable, their classes nearly
/// uniform, and their FID is at the floor (both are real-vs-real distances).
#[test]
fn real_digits_score_at_the_ceiling() {
    let judge = course::eval::Judge::new(course::classifier::load(&course::classifier::default_path()).unwrap()).unwrap();
    let train = Mnist::load(Mnist::default_dir(), Split::Train).unwrap();
    let images = train.gather_images(&(30_000..31_000).collect::<Vec<_>>()).unwrap();
    let report = judge.score(&images, 0).unwrap();
    assert!(report.recognisable > 0.95, "{report:?}");
    assert!((report.class_entropy - 10f64.ln()).abs() < 0.02 * 10f64.ln(), "{report:?}");
    assert!(report.fid < 2.0 * report.fid_floor.max(0.1), "{report:?}");
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
        "train", "--run", run_s, "--base-channels", "8", "--channel-mults", "1,2", "--timesteps", "25", "--batch", "8",
        "--warmup", "2", "--samples", "4", "--steps", "3", "--quiet",
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
    let eval = |checkpoint: &str| ok(&ddpm(&["eval", "--checkpoint", checkpoint, "--samples", "6", "--steps", "5", "--json"]));
    let (from_run, from_export) = (eval(run_s), eval(exported.to_str().unwrap()));
    assert_eq!(from_run, from_export);
    let report: serde_json::Value = serde_json::from_str(&from_run).unwrap();
    assert_eq!(report["samples"], 6);
    let r = report["recognisable"].as_f64().unwrap();
    let h = report["class_entropy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&r) && (0.0..=10f64.ln() + 1e-12).contains(&h), "{report}");
    assert!(report["fid"].as_f64().unwrap() >= 0.0 && report["fid_floor"].as_f64().unwrap() >= 0.0, "{report}");
    // A file that is not a classifier is refused, naming the file.
    let bad = ddpm(&["eval", "--checkpoint", run_s, "--steps", "5", "--classifier", exported.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a classifier"), "{}", String::from_utf8_lossy(&bad.stderr));
    // The ablation: three runs, four rows, a grid per row.
    let out = dir.join("ablation");
    let table = ok(&ddpm(&[
        "ablation", "--out", out.to_str().unwrap(), "--steps", "2", "--samples", "4", "--nll-images", "2", "--base-channels", "8", "--timesteps", "25",
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
