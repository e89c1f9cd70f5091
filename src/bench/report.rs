//! The quick performance report, `ddpm bench [--json]`: our GEMM against
//! `matrixmultiply::sgemm` and our convolutions, in well under a minute,
//! without criterion (the criterion benches in `benches/` go deeper).
//!
//! Every figure is the median over several timed samples after a warm-up;
//! each sample repeats the operation until it lasts about 20 ms. Ours and the
//! baseline are sampled alternately, so load from other processes hits both
//! alike and their ratio stays meaningful on a busy machine. Our samples run
//! with rayon's other workers busy-waiting between calls (`Waiting`), as
//! they do wherever the program runs its kernels (training, sampling, the
//! UNet rows here); the baseline's threads wait as its own library makes them.
//!
//! Rows are produced by section functions (`gemm_rows`, `conv_rows`) that
//! each push [`Row`]s into a [`Report`], which prints them as they come, as
//! a table or as one JSON object per line. A new section is one more function
//! called from [`run`].

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::bench::cases::{random_vec, ConvCase, UNET_CONV3X3};
use crate::bench::step::{measure, StepTiming};
use crate::run::config::TrainConfig;
use nn::UNetConfig;
use tensor::kernels::conv::uses_winograd;
use tensor::kernels::gemm::{
    blocking_f32, gemm, matrixmultiply_sgemm, microkernel_gflops, split_min_mnk, CacheSizes, Kernel, MatMut, MatRef,
};

/// One line of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What was timed, e.g. `"gemm"`, `"conv3x3_fwd"`.
    pub bench: String,
    /// The problem size, e.g. `"1024x1024x1024"` (m x k x n) or `"N64xC32x28x28xK32"`.
    pub shape: String,
    /// Our throughput, GFLOP/s.
    pub gflops: f64,
    /// A reference implementation timed in the same run: (name, GFLOP/s).
    pub baseline: Option<(String, f64)>,
}

/// Prints rows as they are measured, as a table or as JSON lines.
#[derive(Debug)]
pub struct Report<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> Report<W> {
    /// A report that writes to `out`; `json` picks one JSON object per line.
    pub fn new(out: W, json: bool) -> Self {
        Report { out, json }
    }

    /// The header (table mode only): kernel, threads, column names.
    pub fn header(&mut self) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        let kernel = Kernel::best();
        let caches = CacheSizes::detect();
        let blocks = blocking_f32(kernel);
        writeln!(
            self.out,
            "gemm kernel: {}, rayon threads: {}; figures are medians, GFLOP/s",
            kernel.name(),
            rayon::current_num_threads()
        )?;
        writeln!(
            self.out,
            "caches ({}): L1d {} KiB, L2 {} KiB, L3 {} KiB -> f32 blocks MC {} KC {} NC {}",
            caches.source,
            caches.l1d >> 10,
            caches.l2 >> 10,
            caches.l3 >> 10,
            blocks.mc,
            blocks.kc,
            blocks.nc
        )?;
        let side = (split_min_mnk() as f64).cbrt().round();
        writeln!(self.out, "threads: a product is split from {side}^3 multiply-adds on (measured at start-up)")?;
        let algorithms: Vec<String> = UNET_CONV3X3
            .iter()
            .map(|&(c, hw, k)| {
                let case = ConvCase::conv3x3_geometry(c, hw, k);
                let name = |winograd: bool| if winograd { "winograd" } else { "im2col" };
                let (passes, weight_grad) = uses_winograd(&case);
                format!("{}x{} {}/{}/{}", hw, hw, name(passes), name(passes), name(weight_grad))
            })
            .collect();
        writeln!(self.out, "conv 3x3 fwd/dx/dw: {}", algorithms.join(", "))?;
        writeln!(self.out, "{:<16} {:<22} {:>9} {:>9} {:>7}  baseline", "bench", "shape", "ours", "base", "ratio")?;
        Ok(())
    }

    /// Prints one row.
    pub fn row(&mut self, row: &Row) -> io::Result<()> {
        if self.json {
            writeln!(self.out, "{}", row_json(row))?;
        } else {
            match &row.baseline {
                Some((name, base)) => writeln!(
                    self.out,
                    "{:<16} {:<22} {:>9.1} {:>9.1} {:>7.2}  {}",
                    row.bench,
                    row.shape,
                    row.gflops,
                    base,
                    row.gflops / base,
                    name
                )?,
                None => writeln!(self.out, "{:<16} {:<22} {:>9.1}", row.bench, row.shape, row.gflops)?,
            }
        }
        self.out.flush()
    }
}

impl<W: Write> Report<W> {
    /// The two rows of a UNet at a batch size: the training step (forward,
    /// backward, AdamW) and the forward pass without gradients.
    ///
    /// JSON: `{"bench": "unet_train_step", "shape": "B64", "ms": 1234.5,
    /// "gflops": 86.2, "params": 1623169, "peak_rss_mb": 812}` and
    /// `{"bench": "unet_forward", "shape": "B64", "ms": 402.0, "gflops": 88.3}`.
    pub fn step_rows(&mut self, name: &str, timing: &StepTiming) -> io::Result<()> {
        let shape = format!("B{}", timing.batch);
        let peak = timing.peak_rss_bytes.map(|b| b as f64 / (1024.0 * 1024.0));
        if self.json {
            let mut train = serde_json::json!({
                "bench": format!("{name}_train_step"), "shape": shape, "ms": round1(timing.train_step_ms),
                "gflops": round1(timing.train_gflops()), "params": timing.params,
            });
            if let Some(mb) = peak {
                train["peak_rss_mb"] = serde_json::json!(mb.round());
            }
            writeln!(self.out, "{train}")?;
            let forward = serde_json::json!({
                "bench": format!("{name}_forward"), "shape": shape, "ms": round1(timing.forward_ms),
                "gflops": round1(timing.forward_gflops()),
            });
            writeln!(self.out, "{forward}")?;
        } else {
            let peak = peak.map_or_else(|| "n/a".to_string(), |mb| format!("{mb:.0} MB"));
            writeln!(
                self.out,
                "{:<16} {:<22} {:>9.1}  ({:.1} ms per step, {} parameters, peak memory {peak})",
                format!("{name}_train_step"),
                shape,
                timing.train_gflops(),
                timing.train_step_ms,
                timing.params
            )?;
            writeln!(
                self.out,
                "{:<16} {:<22} {:>9.1}  ({:.1} ms, no gradients)",
                format!("{name}_forward"),
                shape,
                timing.forward_gflops(),
                timing.forward_ms
            )?;
        }
        self.out.flush()
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// `{"bench": "gemm", "shape": "64x64x64", "gflops": 80.1, "baseline":
/// "matrixmultiply", "baseline_gflops": 70.2, "ratio": 1.14}`, keys in that
/// order, the baseline keys only when there is one.
fn row_json(row: &Row) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let mut line = format!("{{\"bench\": {}, \"shape\": {}, \"gflops\": {:.1}", quote(&row.bench), quote(&row.shape), row.gflops);
    if let Some((name, base)) = &row.baseline {
        line += &format!(", \"baseline\": {}, \"baseline_gflops\": {:.1}, \"ratio\": {:.2}", quote(name), base, row.gflops / base);
    }
    line + "}"
}

/// Runs the whole report on stdout.
///
/// If rayon's global pool is not built yet, builds it with the calling
/// thread as one of its workers (see "Threads" in `tensor::kernels::gemm`),
/// so both libraries run on all cores with the caller taking part.
///
/// # Errors
/// If writing to stdout fails.
pub fn run(json: bool) -> io::Result<()> {
    // An error only means the pool exists already; use it as it is.
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().build_global();
    // Measured once per process: free if `ddpm`'s main already did it.
    tensor::kernels::gemm::calibrate_split();
    let mut report = Report::new(io::stdout().lock(), json);
    report.header()?;
    // The roofline's flat part: what the FMA units do with no memory traffic.
    let kernel = Kernel::best();
    let peak = tensor::kernels::peak::peak_gflops(kernel, 0.4);
    report.row(&Row { bench: "fma_peak".into(), shape: format!("{}_registers", kernel.name()), gflops: peak, baseline: None })?;
    // The register tile alone, its packed panels in cache: the ceiling of the
    // GEMMs below, which also pack, read and write C, and loop.
    let tile = microkernel_gflops(kernel, 0.4);
    let shape = format!("{}_kc{}_in_cache", kernel.name(), blocking_f32(kernel).kc);
    report.row(&Row { bench: "gemm_microkernel".into(), shape, gflops: tile, baseline: None })?;
    gemm_rows(&mut report)?;
    conv_rows(&mut report)?;
    unet_rows(&mut report)?;
    Ok(())
}

/// Wall time one sample should last.
const SAMPLE_TIME: Duration = Duration::from_millis(20);

/// Samples per figure (the median is reported).
const SAMPLES: usize = 7;

/// How the threads of a timed function wait between its calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// Rayon's other workers busy-wait ([`tensor::KeepAwake`], held through
    /// each sample), as they do through `ddpm train` and `ddpm sample`, so a
    /// call does not start by waking a sleeping thread. PyTorch's OpenMP
    /// threads spin between parallel regions too, so `yardstick.py` times
    /// its products the same way. How our kernels are timed.
    Spinning,
    /// As the function's own library makes them (the baseline).
    Own,
}

/// Times `f` (after a warm-up call), its threads [`Waiting::Spinning`], and
/// returns its median duration per call.
fn median_time(mut f: impl FnMut()) -> Duration {
    median_times([(&mut f as &mut dyn FnMut(), Waiting::Spinning)])[0]
}

/// Times each function in turn, `SAMPLES` times round-robin, each sample
/// long enough to last `SAMPLE_TIME` and begun by one untimed call (which
/// also wakes the pool); returns each one's median per call.
fn median_times<const N: usize>(mut fs: [(&mut dyn FnMut(), Waiting); N]) -> [Duration; N] {
    let guard = |waiting: Waiting| (waiting == Waiting::Spinning).then(tensor::KeepAwake::new);
    // Warm-up: caches, page faults, scratch buffers, the thread pool; and a
    // first guess at how many calls make a sample.
    let reps: [u32; N] = std::array::from_fn(|i| {
        let (f, waiting) = &mut fs[i];
        let _awake = guard(*waiting);
        f();
        let start = Instant::now();
        f();
        let once = start.elapsed().max(Duration::from_nanos(100));
        (SAMPLE_TIME.as_secs_f64() / once.as_secs_f64()).ceil().clamp(1.0, 1e6) as u32
    });
    let mut samples: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(SAMPLES));
    for _ in 0..SAMPLES {
        for (((f, waiting), &reps), samples) in fs.iter_mut().zip(&reps).zip(&mut samples) {
            let _awake = guard(*waiting);
            f();
            let start = Instant::now();
            for _ in 0..reps {
                f();
            }
            samples.push(start.elapsed() / reps);
        }
    }
    samples.map(|mut t| {
        t.sort();
        t[SAMPLES / 2]
    })
}

fn gflops(flops: f64, time: Duration) -> f64 {
    flops / time.as_secs_f64() / 1e9
}

/// A GEMM problem: C (m, n) = A (m, k) B (k, n), where A and B may be
/// stored transposed (as in the backward pass of a conv).
struct GemmCase {
    bench: &'static str,
    m: usize,
    k: usize,
    n: usize,
    a_transposed: bool,
    b_transposed: bool,
}

const fn square(n: usize) -> GemmCase {
    GemmCase { bench: "gemm", m: n, k: n, n, a_transposed: false, b_transposed: false }
}

/// Square sizes, then the UNet's im2col GEMMs for one image of a 3x3 conv
/// (m = out channels K, k = C * 9, n = OH * OW) and its backward products,
/// and attention at 7x7 with 64 channels.
const GEMM_CASES: [GemmCase; 12] = [
    square(64),
    square(128),
    square(256),
    square(512),
    square(1024),
    square(2048),
    GemmCase { bench: "gemm_conv28", m: 32, k: 288, n: 784, a_transposed: false, b_transposed: false },
    GemmCase { bench: "gemm_conv14", m: 64, k: 576, n: 196, a_transposed: false, b_transposed: false },
    GemmCase { bench: "gemm_conv7", m: 64, k: 576, n: 49, a_transposed: false, b_transposed: false },
    GemmCase { bench: "gemm_attn7", m: 49, k: 64, n: 49, a_transposed: false, b_transposed: true },
    // grad input columns (C*9, OH*OW) = W^T (C*9, K) dY (K, OH*OW)
    GemmCase { bench: "gemm_conv28_dx", m: 288, k: 32, n: 784, a_transposed: true, b_transposed: false },
    // grad weight (K, C*9) = dY (K, OH*OW) cols^T (OH*OW, C*9)
    GemmCase { bench: "gemm_conv28_dw", m: 32, k: 784, n: 288, a_transposed: false, b_transposed: true },
];

/// Our `gemm` against `matrixmultiply::sgemm`, both on all cores.
fn gemm_rows<W: Write>(report: &mut Report<W>) -> io::Result<()> {
    for case in &GEMM_CASES {
        let GemmCase { m, k, n, .. } = *case;
        let a = random_vec(m * k, 1);
        let b = random_vec(k * n, 2);
        let mut c = vec![0.0f32; m * n];
        // Row-major storage of A (m, k), or of A^T (k, m) viewed transposed.
        let (rsa, csa) = if case.a_transposed { (1, m) } else { (k, 1) };
        let (rsb, csb) = if case.b_transposed { (1, k) } else { (n, 1) };
        let a_view = MatRef::new(&a, m, k, rsa, csa).expect("A fits its buffer");
        let b_view = MatRef::new(&b, k, n, rsb, csb).expect("B fits its buffer");

        let mut ours = || gemm(1.0, a_view, b_view, 0.0, MatMut::new(&mut c, m, n, n, 1).expect("C fits"));
        let mut c_base = vec![0.0f32; m * n];
        let mut baseline = || matrixmultiply_sgemm(1.0, a_view, b_view, 0.0, MatMut::new(&mut c_base, m, n, n, 1).expect("C fits"));
        let [t_ours, t_base] = median_times([(&mut ours, Waiting::Spinning), (&mut baseline, Waiting::Own)]);
        let flops = 2.0 * (m * n * k) as f64;
        report.row(&Row {
            bench: case.bench.to_string(),
            shape: format!("{m}x{k}x{n}"),
            gflops: gflops(flops, t_ours),
            baseline: Some(("matrixmultiply".to_string(), gflops(flops, t_base))),
        })?;
    }
    Ok(())
}

/// One pass of a convolution case ([`ConvCase::forward`], ...), timed as one row.
type ConvPass = fn(&mut ConvCase);

/// The UNet's 3x3 convolutions (stride 1, padding 1) at batch 64: forward,
/// grad input and grad weight alone (each as many flops as the forward), and
/// forward + grad input + grad weight (3x the forward flops).
fn conv_rows<W: Write>(report: &mut Report<W>) -> io::Result<()> {
    for (c, hw, k) in UNET_CONV3X3 {
        let mut case = ConvCase::conv3x3(c, hw, k);
        let (flops, shape) = (case.geometry.flops(), case.label());
        let timed: [(&str, f64, ConvPass); 4] = [
            ("conv3x3_fwd", flops, ConvCase::forward),
            ("conv3x3_dx", flops, ConvCase::backward_input),
            ("conv3x3_dw", flops, ConvCase::backward_weight),
            ("conv3x3_fwd_bwd", 3.0 * flops, ConvCase::forward_backward),
        ];
        for (bench, flops, pass) in timed {
            let time = median_time(|| pass(&mut case));
            report.row(&Row { bench: bench.into(), shape: shape.clone(), gflops: gflops(flops, time), baseline: None })?;
        }
    }
    Ok(())
}

/// The course UNet and the quick preset's UNet, batch 64.
fn unet_rows<W: Write>(report: &mut Report<W>) -> io::Result<()> {
    let configs = [("unet", UNetConfig::default()), ("unet_quick", TrainConfig::quick_unet())];
    for (name, config) in configs {
        let timing = measure(&config, 64, 3).map_err(io::Error::other)?;
        report.step_rows(name, &timing)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_have_the_documented_form() {
        let row =
            Row { bench: "gemm".into(), shape: "1024x1024x1024".into(), gflops: 231.04, baseline: Some(("matrixmultiply".into(), 150.2)) };
        assert_eq!(
            row_json(&row),
            r#"{"bench": "gemm", "shape": "1024x1024x1024", "gflops": 231.0, "baseline": "matrixmultiply", "baseline_gflops": 150.2, "ratio": 1.54}"#
        );
        let row = Row { bench: "conv3x3_fwd".into(), shape: "N64xC32x28x28xK32".into(), gflops: 180.0, baseline: None };
        assert_eq!(row_json(&row), r#"{"bench": "conv3x3_fwd", "shape": "N64xC32x28x28xK32", "gflops": 180.0}"#);
    }
}
