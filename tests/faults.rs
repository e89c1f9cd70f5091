//! The fault suite: the `ddpm` program run as a user and a careful tester would,
//! against the built binary. Bad input is refused before any work with one line
//! naming the flag (exit 2); nothing the program allows loses work (an export onto
//! a resumable checkpoint, two runs in one folder, SIGTERM, a killed checkpoint
//! write); memory stays flat in `--count`; a non-finite model is an error (exit 1),
//! not a black picture; every long command reports progress.
//!
//! Every model here is tiny (8 base channels, T = 25), so the whole file runs in
//! seconds.

use nn::Checkpoint;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A tiny UNet on MNIST: 8 base channels, two levels (28, 14), T = 25, with a
/// constant learning rate (the quick preset's cosine one fixes the run's length, and
/// these tests resume runs to a new --steps).
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
    "--lr-schedule",
    "constant",
];

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ddpm"))
}

fn ddpm(args: &[&str]) -> Output {
    bin().args(args).output().expect("the ddpm binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-faults-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success and returns stdout.
fn ok(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", out.status.code(), text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Asserts the exit code, no panic, and returns stderr.
fn fails(out: &Output, code: i32) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stdout: {}\nstderr: {stderr}", text(&out.stdout));
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "a panic: {stderr}");
    stderr
}

fn train_args(run: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["train".into(), "--run".into(), s(run).into()];
    args.extend(TINY.iter().map(|a| a.to_string()));
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// One tiny run of 3 steps, trained once and shared (read-only) by the tests.
fn tiny_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = scratch("shared-run");
        ok(&bin().args(train_args(&run, &["--steps", "3", "--quiet"])).output().unwrap());
        run
    })
}

fn metrics_rows(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.csv")).map_or(0, |t| t.lines().count().saturating_sub(1))
}

/// Waits for `child` at most `limit`; kills it and fails the test when it runs longer.
fn wait_at_most(mut child: Child, limit: Duration, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = Output { status: child.wait().unwrap(), stdout: Vec::new(), stderr: Vec::new() };
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut out.stdout).unwrap();
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut out.stderr).unwrap();
    }
    out
}

/// Starts a long training run (100,000 steps) and waits until `rows` steps are logged.
fn start_long_run(run: &Path, rows: usize) -> Child {
    let child = bin()
        .args(train_args(run, &["--steps", "100000", "--checkpoint-every", "100000", "--quiet"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while metrics_rows(run) < rows {
        assert!(started.elapsed() < Duration::from_secs(60), "training did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn signal(child: &Child, name: &str) {
    assert!(Command::new("kill").args([name, &child.id().to_string()]).status().unwrap().success());
}

/// A bad input: the arguments (`{ckpt}` is the tiny run, `{dir}` a scratch
/// folder), an environment variable, and what the one-line error must and must not say.
struct Case {
    args: &'static str,
    env: Option<(&'static str, &'static str)>,
    says: &'static [&'static str],
    not: &'static [&'static str],
}

const fn case(args: &'static str, says: &'static [&'static str]) -> Case {
    Case { args, env: None, says, not: &[] }
}

#[test]
fn bad_inputs_are_one_line_errors_naming_the_flag_and_its_range() {
    let dir = scratch("bad");
    std::fs::write(dir.join("file.txt"), b"a file, not a folder").unwrap();
    let cases = [
        case("sample --checkpoint {ckpt} --eta=-1", &["--eta", "[0, 1]"]),
        case("sample --checkpoint {ckpt} --eta 5", &["--eta", "[0, 1]"]),
        case("sample --checkpoint {ckpt} --eta nan", &["--eta"]),
        case("sample --checkpoint {ckpt} --steps 5000", &["--steps", "5000", "T = 25"]),
        case("sample --checkpoint {ckpt} --sampler langevin --steps 26", &["--steps", "T = 25"]),
        case("sample --checkpoint {ckpt} --steps 1", &["--steps", "at least 2"]),
        case("sample --checkpoint {ckpt} --steps 2 --out {dir}/s.jpg", &["--out", ".png"]),
        case("sample --checkpoint {ckpt} --steps 2 --trajectory {dir}/t.gif", &["--trajectory", ".png"]),
        case("sample --checkpoint {ckpt} --steps 2 --out {dir}/file.txt/s.png", &["--out", "file.txt/s.png"]),
        case("eval --checkpoint {ckpt} --samples 8 --steps 2 --grid {dir}/g.bmp", &["--grid", ".png"]),
        case("eval --checkpoint {ckpt} --samples 8 --eta 2", &["--eta"]),
        case("nll --checkpoint {ckpt} --images 2 --out {dir}/file.txt", &["--out", "file.txt"]),
        case("forward --out {dir}/file.txt --images 1 --t 0", &["--out", "file.txt"]),
        Case { args: "train --grad-clip=-1 --run {dir}/r", env: None, says: &["--grad-clip"], not: &["--time-budget", "--hybrid-lambda"] },
        case("train --hybrid-lambda inf --run {dir}/r", &["--hybrid-lambda", "finite"]),
        // One step of 100 million images would take terabytes; the kernel would kill it.
        case(
            "train --base-channels 8 --channel-mults 1,2 --timesteps 25 --batch 100000000 --steps 1 --quiet --run {dir}/big",
            &["--batch", "GB", "or less"],
        ),
        case("train --time-budget inf --run {dir}/r", &["--time-budget", "finite"]),
        // Sizes whose buffers no machine has are refused before one is asked for.
        case("sample --checkpoint {ckpt} --count 18446744073709551615", &["--count", "100000"]),
        case("eval --checkpoint {ckpt} --samples 100001", &["--samples", "100000"]),
        case("train --timesteps 1000000000000 --run {dir}/r", &["--timesteps", "100000"]),
        case("forward --timesteps 18446744073709551615 --t 0 --out {dir}/fw", &["timesteps", "100000"]),
        case("train --base-channels 1000000000000 --run {dir}/r", &["--base-channels", "parameters"]),
        case("train --base-channels 4611686018427387904 --channel-mults 1,4 --run {dir}/r", &["--base-channels", "overflows"]),
        case("train --res-blocks 1000000000000 --run {dir}/r", &["--res-blocks", "num_res_blocks"]),
        case("train --model mlp --data two-moons --hidden 1000000000000 --run {dir}/r", &["--hidden", "parameters"]),
        case("ablation --samples 1 --out {dir}/ab", &["--samples", "from 2"]),
        case("ablation --timesteps 1000000 --out {dir}/ab", &["--timesteps", "100000"]),
        Case {
            args: "train --preset toy --hidden 0 --run {dir}/r",
            env: None,
            says: &["--hidden", "at least 1"],
            not: &["{", "MlpConfig"],
        },
        Case { args: "train --preset toy --depth 0 --run {dir}/r", env: None, says: &["--depth", "at least 1"], not: &["{", "MlpConfig"] },
        case("forward --images 1 --t 0 --out {dir}/fw --data-dir {dir}/nowhere", &["--data-dir", "nowhere"]),
        Case {
            args: "forward --images 1 --t 0 --out {dir}/fw",
            env: Some(("DDPM_DATA_DIR", "{dir}/elsewhere")),
            says: &["DDPM_DATA_DIR", "elsewhere"],
            not: &[],
        },
        Case {
            args: "classifier test",
            env: Some(("DDPM_DATA_DIR", "{dir}/elsewhere")),
            says: &["elsewhere", "classifier.safetensors"],
            not: &[],
        },
    ];
    let ckpt = tiny_run();
    for case in &cases {
        let line = case.args.replace("{ckpt}", s(ckpt)).replace("{dir}", s(&dir));
        let mut command = bin();
        command.args(line.split(' '));
        if let Some((key, value)) = case.env {
            command.env(key, value.replace("{dir}", s(&dir)));
        }
        let out = command.output().unwrap();
        let e = fails(&out, 2);
        assert_eq!(e.trim_end().lines().count(), 1, "`ddpm {line}`: not one line:\n{e}");
        for want in case.says {
            assert!(e.contains(want), "`ddpm {line}`: the error does not say {want:?}: {e}");
        }
        for unwanted in case.not {
            assert!(!e.contains(unwanted), "`ddpm {line}`: the error says {unwanted:?}: {e}");
        }
    }
    // No refused command left a file behind.
    for name in ["s.jpg", "t.gif", "g.bmp", "samples.png", "fw", "r", "ab"] {
        assert!(!dir.join(name).exists(), "{name} was written");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_output_folder_is_named_once_and_refused_before_the_computation() {
    let dir = scratch("outdir");
    let e = fails(&ddpm(&["sample", "--checkpoint", s(tiny_run()), "--count", "2", "--steps", "2", "--out", s(&dir)]), 2);
    assert_eq!(e.matches(s(&dir)).count(), 1, "{e}");
    // 10,000 test images through T = 25 steps take minutes; the unwritable
    // output must be refused before that.
    std::fs::write(dir.join("file.txt"), b"x").unwrap();
    let child = bin()
        .args(["nll", "--checkpoint", s(tiny_run()), "--images", "10000", "--out", s(&dir.join("file.txt").join("figures"))])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let e = fails(&wait_at_most(child, Duration::from_secs(20), "nll with an unwritable --out"), 2);
    assert!(e.contains("--out") && e.contains("file.txt"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_cosine_schedule_allows_few_timesteps_in_forward() {
    let dir = scratch("cosine");
    ok(&ddpm(&["forward", "--schedule", "cosine", "--timesteps", "10", "--images", "1", "--t", "0,9", "--out", s(&dir)]));
    assert!(dir.join("forward.png").exists() && dir.join("schedule.png").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn export_refuses_to_overwrite_a_resumable_checkpoint_without_force() {
    let run = scratch("export");
    ok(&bin().args(train_args(&run, &["--steps", "3", "--quiet"])).output().unwrap());
    let ckpt = run.join("checkpoint.safetensors");
    let before = std::fs::read(&ckpt).unwrap();
    let e = fails(&ddpm(&["export", "--checkpoint", s(&run), "--out", s(&ckpt)]), 2);
    assert!(e.contains("--force") && e.contains("optimizer"), "{e}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), before, "the checkpoint changed");
    // Resuming still works, and an exported file (no optimizer state) may be overwritten.
    ok(&ddpm(&["train", "--run", s(&run), "--resume", "--steps", "4", "--quiet"]));
    let shipped = run.join("shipped.safetensors");
    ok(&ddpm(&["export", "--checkpoint", s(&run), "--out", s(&shipped)]));
    ok(&ddpm(&["export", "--checkpoint", s(&run), "--out", s(&shipped)]));
    ok(&ddpm(&["export", "--checkpoint", s(&run), "--out", s(&ckpt), "--force"]));
    assert!(Checkpoint::<f32>::load(&ckpt).unwrap().optimizer.is_empty());
    std::fs::remove_dir_all(run).unwrap();
}

#[test]
fn sigterm_and_ctrl_c_save_a_checkpoint_and_exit_130() {
    for name in ["-TERM", "-INT"] {
        let run = scratch(&format!("signal{name}"));
        let child = start_long_run(&run, 3);
        signal(&child, name);
        let out = wait_at_most(child, Duration::from_secs(60), name);
        fails(&out, 130);
        assert!(text(&out.stdout).starts_with("interrupted at step"), "{name}: {}", text(&out.stdout));
        let ckpt = Checkpoint::<f32>::load(run.join("checkpoint.safetensors")).unwrap();
        let step: usize = ckpt.metadata["step"].parse().unwrap();
        assert!(step >= 3 && metrics_rows(&run) == step, "{name}: step {step}, rows {}", metrics_rows(&run));
        std::fs::remove_dir_all(run).unwrap();
    }
}

#[test]
fn a_second_run_in_the_same_folder_is_refused_naming_the_first_pid() {
    let run = scratch("lock");
    let first = start_long_run(&run, 1);
    for extra in [&["--steps", "2", "--quiet"][..], &["--resume", "--quiet"][..]] {
        let mut args = vec!["train", "--run", s(&run)];
        args.extend_from_slice(extra);
        let second = bin().args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let e = fails(&wait_at_most(second, Duration::from_secs(30), "the second run"), 2);
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(e.contains(&first.id().to_string()), "the error does not name pid {}: {e}", first.id());
    }
    signal(&first, "-INT");
    let out = wait_at_most(first, Duration::from_secs(60), "the first run");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let step: usize = Checkpoint::<f32>::load(run.join("checkpoint.safetensors")).unwrap().metadata["step"].parse().unwrap();
    assert_eq!(metrics_rows(&run), step, "the folder mixes two runs");
    // A lock left by a process that died (SIGKILL) is taken over.
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    std::fs::write(run.join("run.lock"), dead.id().to_string()).unwrap();
    ok(&ddpm(&["train", "--run", s(&run), "--resume", "--steps", &(step + 1).to_string(), "--quiet"]));
    assert!(!run.join("run.lock").exists(), "the lock outlived its run");
    std::fs::remove_dir_all(run).unwrap();
}

#[test]
fn stale_temp_files_of_a_killed_write_are_removed_on_the_next_start() {
    let run = scratch("stale");
    ok(&bin().args(train_args(&run, &["--steps", "3", "--quiet"])).output().unwrap());
    // What a SIGKILL during a write leaves: the temp files of nn's atomic save
    // and of the run's own config and metrics writes.
    let stale = [".checkpoint.safetensors.4000000-0.tmp", "config.tmp", "metrics.tmp"];
    for name in stale {
        std::fs::write(run.join(name), b"half a file").unwrap();
    }
    ok(&ddpm(&["train", "--run", s(&run), "--resume", "--steps", "4", "--quiet"]));
    for name in stale {
        assert!(!run.join(name).exists(), "{name} is still there");
    }
    std::fs::remove_dir_all(run).unwrap();
}

/// The peak resident memory (VmHWM) of a child process, polled until it exits;
/// kills it once the peak passes `limit_kb`.
fn peak_kb(mut child: Child, limit_kb: u64) -> (u64, bool) {
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(st) = std::fs::read_to_string(&status) {
            if let Some(kb) = st.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()) {
                peak = peak.max(kb);
            }
        }
        if peak > limit_kb {
            let _ = child.kill();
            let _ = child.wait();
            return (peak, false);
        }
        if child.try_wait().unwrap().is_some() {
            return (peak, child.wait().unwrap().success());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sample_memory_is_flat_in_count() {
    let dir = scratch("memory");
    let spawn = |count: &str| {
        bin()
            .args([
                "sample",
                "--checkpoint",
                s(tiny_run()),
                "--steps",
                "2",
                "--count",
                count,
                "--out",
                s(&dir.join(format!("s{count}.png"))),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (small, done) = peak_kb(spawn("250"), u64::MAX);
    assert!(done, "sample --count 250 failed");
    // Four times the samples: the samples themselves (4 x 3 KB each) and the
    // larger picture are all that may grow, a few MB; one batch of 1000 would
    // add hundreds.
    let limit = small + 48 * 1024;
    let (large, done) = peak_kb(spawn("1000"), limit);
    assert!(done && large <= limit, "peak {large} kB for 1000 samples, {small} kB for 250");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A copy of the tiny run whose weights are all NaN.
fn nan_checkpoint(dir: &Path) -> PathBuf {
    let mut c = Checkpoint::<f32>::load(tiny_run().join("checkpoint.safetensors")).unwrap();
    for (_, t) in c.model.iter_mut().chain(c.ema.iter_mut()) {
        *t = tensor::Tensor::from_vec(vec![f32::NAN; t.to_vec().len()], t.dims()).unwrap();
    }
    let path = dir.join("nan.safetensors");
    c.save(&path).unwrap();
    path
}

#[test]
fn a_checkpoint_whose_config_does_not_fit_is_refused_naming_the_file() {
    // The config in the metadata rebuilds the model, so a file whose config asks
    // for sizes no flag accepts, or for a model other than the weights it holds,
    // is refused before a buffer is made for it.
    let dir = scratch("config");
    let original = Checkpoint::<f32>::load(tiny_run().join("checkpoint.safetensors")).unwrap();
    let edits: [(&str, &str); 4] = [
        ("\"timesteps\":25", "\"timesteps\":1000000000000000"),
        ("\"base_channels\":8", "\"base_channels\":1000000000000"),
        ("\"base_channels\":8", "\"base_channels\":16"),
        ("\"image_size\":28", "\"image_size\":4294967296"),
    ];
    for (i, (from, to)) in edits.iter().enumerate() {
        let mut c = original.clone();
        let config = c.metadata.get_mut("config").unwrap();
        assert!(config.contains(from), "the tiny run's config has no {from}: {config}");
        *config = config.replacen(from, to, 1);
        let path = dir.join(format!("edited{i}.safetensors"));
        c.save(&path).unwrap();
        let e = fails(&ddpm(&["sample", "--checkpoint", s(&path), "--count", "1", "--steps", "2", "--out", s(&dir.join("s.png"))]), 2);
        assert!(e.contains(&format!("edited{i}.safetensors")) && e.contains("config"), "{to}: {e}");
    }
    assert!(!dir.join("s.png").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_non_finite_model_is_an_error_not_a_black_picture() {
    let dir = scratch("nan");
    let ckpt = nan_checkpoint(&dir);
    let out = dir.join("s.png");
    let e = fails(&ddpm(&["sample", "--checkpoint", s(&ckpt), "--count", "2", "--steps", "2", "--out", s(&out)]), 1);
    assert!(e.contains("not finite"), "{e}");
    assert!(!out.exists(), "a picture was written");
    let e = fails(&ddpm(&["nll", "--checkpoint", s(&ckpt), "--images", "2", "--out", s(&dir)]), 1);
    assert!(e.contains("not finite"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn long_commands_log_progress_with_an_eta_when_not_on_a_terminal() {
    let dir = scratch("progress");
    let ckpt = tiny_run();
    let runs: [Vec<String>; 3] = [
        ["sample", "--checkpoint", s(ckpt), "--count", "4", "--steps", "10", "--out", s(&dir.join("s.png"))].map(String::from).to_vec(),
        ["nll", "--checkpoint", s(ckpt), "--images", "4", "--out", s(&dir)].map(String::from).to_vec(),
        train_args(&dir.join("run"), &["--steps", "10"]),
    ];
    for args in &runs {
        let out = bin().args(args).output().unwrap();
        ok(&out);
        let stderr = text(&out.stderr);
        let lines = stderr.lines().filter(|l| l.contains("ETA")).count();
        assert!(lines >= 2, "`ddpm {}`: {lines} progress lines: {stderr}", args[0]);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_time_budget_stop_says_so() {
    let run = scratch("budget");
    let out = bin().args(train_args(&run, &["--steps", "1000", "--time-budget", "0.001", "--quiet"])).output().unwrap();
    ok(&out);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains("--time-budget"), "{said}");
    std::fs::remove_dir_all(run).unwrap();
}

#[test]
fn eval_warns_when_the_samples_are_too_few_for_the_fid() {
    let out = ddpm(&["eval", "--checkpoint", s(tiny_run()), "--samples", "16", "--steps", "2"]);
    ok(&out);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("warning") && stderr.contains("--samples"), "{stderr}");
}

#[test]
fn nll_of_a_shipped_file_writes_its_figures_into_the_current_folder() {
    let dir = scratch("nll-out");
    let (shipped, work) = (dir.join("shipped"), dir.join("work"));
    std::fs::create_dir_all(&shipped).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let file = shipped.join("model.safetensors");
    ok(&ddpm(&["export", "--checkpoint", s(tiny_run()), "--out", s(&file)]));
    ok(&bin().current_dir(&work).args(["nll", "--checkpoint", s(&file), "--images", "2"]).output().unwrap());
    assert!(work.join("nll_per_timestep.png").exists());
    assert!(!shipped.join("nll_per_timestep.png").exists(), "wrote beside the shipped file");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn data_dir_flag_and_exit_codes_in_help() {
    let help = ok(&ddpm(&["--help"]));
    let lower = help.to_lowercase();
    assert!(lower.contains("exit code") && ["diverged", "bad input", "130", "interrupted"].iter().all(|w| lower.contains(w)), "{help}");
    let dir = scratch("data-dir");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    ok(&ddpm(&["forward", "--images", "1", "--t", "0", "--out", s(&dir.join("fw")), "--data-dir", s(&data)]));
    ok(&bin().env("DDPM_DATA_DIR", &data).args(["forward", "--images", "1", "--t", "0", "--out", s(&dir.join("fw"))]).output().unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bench_stops_quietly_when_its_reader_leaves_and_fails_when_stdout_does() {
    // `ddpm bench | head -1` once head has gone: the next write meets a closed pipe,
    // and the program stops with exit 0 and nothing on stderr.
    let mut child = bin().arg("bench").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = wait_at_most(child, Duration::from_secs(120), "bench into a closed pipe");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    // Any other failure to write is an error naming the report (a full disk here).
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("no /dev/full on this system: the full-disk half is skipped");
        return;
    };
    let out = wait_at_most(bin().arg("bench").stdout(full).stderr(Stdio::piped()).spawn().unwrap(), Duration::from_secs(120), "bench");
    assert!(fails(&out, 2).contains("bench"), "{}", text(&out.stderr));
}
