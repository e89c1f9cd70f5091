//! The golden test: every case in `tests/golden/*.json` (or in the folder named by
//! `DDPM_GOLDEN_DIR`) against this project's implementation. The reference values
//! were computed in float64 by independent code (PyTorch autograd, the
//! improved-diffusion GaussianDiffusion class, `torch.optim.AdamW`); the format is
//! described in `tests/golden/README.md`.
//!
//! A case passes when, for every expected tensor, the shapes agree, nothing is NaN
//! and `||actual - expected||_2 / max(||expected||_2, 1e-12) <= tol`. Op kinds run
//! in f32, the precision the model trains in.
//!
//! A kind this test does not know fails it. Kinds whose code has not landed yet are
//! listed in `PENDING` by name: their cases must report "not implemented", so a
//! pending kind can never pass (or be skipped) silently.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tensor::{attention, Tensor};

/// Kinds whose implementation has not landed yet (none at the moment).
const PENDING: &[&str] = &[];

/// A tensor of the golden files: shape and row-major values.
#[derive(Clone, Debug)]
struct Golden {
    shape: Vec<usize>,
    data: Vec<f64>,
}

#[derive(Debug)]
enum CaseError {
    NotImplemented(String),
    Failed(String),
}

type Outputs = BTreeMap<String, Golden>;

fn golden_dir() -> PathBuf {
    match std::env::var_os("DDPM_GOLDEN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden"),
    }
}

fn parse_tensor(v: &Value, what: &str) -> Result<Golden, String> {
    let shape = v["shape"]
        .as_array()
        .ok_or(format!("{what}: no shape"))?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize).ok_or(format!("{what}: bad dimension {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    let data = v["data"]
        .as_array()
        .ok_or(format!("{what}: no data"))?
        .iter()
        .map(|x| x.as_f64().ok_or(format!("{what}: bad value {x}")))
        .collect::<Result<Vec<_>, _>>()?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(format!("{what}: {} values for shape {shape:?}", data.len()));
    }
    Ok(Golden { shape, data })
}

struct Case {
    params: Value,
    inputs: BTreeMap<String, Golden>,
}

impl Case {
    fn input_f32(&self, name: &str) -> Result<Tensor<f32>, CaseError> {
        let g = self.inputs.get(name).ok_or_else(|| CaseError::Failed(format!("missing input {name}")))?;
        Tensor::from_vec(g.data.iter().map(|&v| v as f32).collect(), &g.shape).map_err(fail)
    }

    fn param_usize(&self, name: &str) -> Result<usize, CaseError> {
        self.params[name].as_u64().map(|v| v as usize).ok_or_else(|| CaseError::Failed(format!("missing param {name}")))
    }
}

fn fail(e: impl std::fmt::Display) -> CaseError {
    CaseError::Failed(e.to_string())
}

fn out<T: tensor::Float>(outputs: &mut Outputs, name: &str, t: &Tensor<T>) {
    let data = t.to_vec().iter().map(|v| v.to_f64()).collect();
    outputs.insert(name.to_string(), Golden { shape: t.dims().to_vec(), data });
}

/// Forward, then backward seeded with `grad_output`; records `output` and
/// `grad_<name>` for each named input.
fn forward_backward(case: &Case, names: &[&str], f: impl Fn(&[Tensor<f32>]) -> tensor::Result<Tensor<f32>>) -> Result<Outputs, CaseError> {
    let vars = names.iter().map(|n| Ok(case.input_f32(n)?.requires_grad())).collect::<Result<Vec<_>, CaseError>>()?;
    let y = f(&vars).map_err(fail)?;
    let mut outputs = Outputs::new();
    out(&mut outputs, "output", &y);
    let grads = match case.inputs.contains_key("grad_output") {
        true => y.backward_with(&case.input_f32("grad_output")?),
        false => y.backward(),
    }
    .map_err(fail)?;
    for (name, var) in names.iter().zip(&vars) {
        let g = grads.get(var).ok_or_else(|| CaseError::Failed(format!("no gradient for {name}")))?;
        out(&mut outputs, &format!("grad_{name}"), g);
    }
    Ok(outputs)
}

fn run_case(kind: &str, case: &Case) -> Result<Outputs, CaseError> {
    if let Some(result) = run_diffusion_case(kind, case) {
        return result;
    }
    if let Some(result) = run_nn_case(kind, case) {
        return result;
    }
    match kind {
        "linear" => forward_backward(case, &["x", "weight", "bias"], |v| v[0].linear(&v[1], Some(&v[2]))),
        "conv2d" => {
            let (stride, padding) = (case.param_usize("stride")?, case.param_usize("padding")?);
            forward_backward(case, &["x", "weight", "bias"], |v| v[0].conv2d(&v[1], Some(&v[2]), stride, padding))
        }
        "group_norm" => {
            let groups = case.param_usize("num_groups")?;
            let eps = case.params["eps"].as_f64().ok_or_else(|| fail("missing param eps"))?;
            forward_backward(case, &["x", "weight", "bias"], |v| v[0].group_norm(groups, &v[1], &v[2], eps))
        }
        "silu" => forward_backward(case, &["x"], |v| Ok(v[0].silu())),
        "softmax" => {
            let dim = case.param_usize("dim")?;
            forward_backward(case, &["x"], |v| v[0].softmax(dim))
        }
        "upsample_nearest2d" => {
            let scale = case.param_usize("scale")?;
            forward_backward(case, &["x"], |v| v[0].upsample_nearest2d(scale))
        }
        "attention" => forward_backward(case, &["q", "k", "v"], |v| attention(&v[0], &v[1], &v[2])),
        "matmul" => forward_backward(case, &["a", "b"], |v| v[0].matmul(&v[1])),
        "broadcast_binary" => {
            let op = case.params["op"].as_str().unwrap_or_default().to_string();
            forward_backward(case, &["a", "b"], |v| match op.as_str() {
                "add" => v[0].add(&v[1]),
                "sub" => v[0].sub(&v[1]),
                "mul" => v[0].mul(&v[1]),
                "div" => v[0].div(&v[1]),
                other => Err(tensor::Error::InvalidArgument { op: "broadcast_binary", msg: format!("unknown op {other}") }),
            })
        }
        "mse_loss" => {
            let outputs = forward_backward(case, &["pred", "target"], |v| v[0].mse_loss(&v[1]))?;
            Ok(outputs.into_iter().filter(|(k, _)| k != "grad_target").collect())
        }
        k if PENDING.contains(&k) => Err(CaseError::NotImplemented(k.to_string())),
        k => Err(CaseError::Failed(format!("unknown golden kind {k}: this test has no implementation for it"))),
    }
}

// ------------------------------------------------------------------ diffusion kinds (ddpm, #5)
//
// The diffusion math runs in f64, the precision the reference computed it in.

impl Case {
    fn input_f64(&self, name: &str) -> Result<Tensor<f64>, CaseError> {
        let g = self.inputs.get(name).ok_or_else(|| CaseError::Failed(format!("missing input {name}")))?;
        Tensor::from_vec(g.data.clone(), &g.shape).map_err(fail)
    }

    fn param_str(&self, name: &str) -> Result<&str, CaseError> {
        self.params[name].as_str().ok_or_else(|| CaseError::Failed(format!("missing param {name}")))
    }

    fn param_bool(&self, name: &str) -> Result<bool, CaseError> {
        self.params[name].as_bool().ok_or_else(|| CaseError::Failed(format!("missing param {name}")))
    }

    fn param_timesteps(&self) -> Result<Vec<usize>, CaseError> {
        self.params["t"]
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_u64().map(|v| v as usize)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| CaseError::Failed("missing param t".to_string()))
    }

    fn schedule(&self) -> Result<ddpm::NoiseSchedule, CaseError> {
        let kind: ddpm::BetaSchedule = self.param_str("schedule")?.parse().map_err(fail)?;
        ddpm::NoiseSchedule::new(kind, self.param_usize("timesteps")?).map_err(fail)
    }

    fn reverse_options(&self) -> Result<ddpm::ReverseOptions, CaseError> {
        Ok(ddpm::ReverseOptions {
            // The cases spell the variance as improved-diffusion's enum does (fixed_large).
            variance: self.param_str("variance")?.replace('_', "-").parse().map_err(fail)?,
            parameterization: ddpm::Parameterization::Epsilon,
            clip_denoised: self.param_bool("clip_denoised")?,
        })
    }
}

fn out_f64(outputs: &mut Outputs, name: &str, values: &[f64]) {
    outputs.insert(name.to_string(), Golden { shape: vec![values.len()], data: values.to_vec() });
}

/// The diffusion kinds, or `None` for a kind that is not one of them.
fn run_diffusion_case(kind: &str, case: &Case) -> Option<Result<Outputs, CaseError>> {
    let run = || -> Result<Outputs, CaseError> {
        let mut outputs = Outputs::new();
        match kind {
            "schedule" => {
                let s = case.schedule()?;
                out_f64(&mut outputs, "betas", &s.betas);
                out_f64(&mut outputs, "alphas_cumprod", &s.alphas_cumprod);
                out_f64(&mut outputs, "alphas_cumprod_prev", &s.alphas_cumprod_prev);
                out_f64(&mut outputs, "posterior_variance", &s.posterior_variance);
                out_f64(&mut outputs, "posterior_log_variance_clipped", &s.posterior_log_variance_clipped);
                out_f64(&mut outputs, "posterior_mean_coef1", &s.posterior_mean_coef1);
                out_f64(&mut outputs, "posterior_mean_coef2", &s.posterior_mean_coef2);
            }
            "normal_kl" => {
                let [m1, lv1, m2, lv2] = ["mean1", "logvar1", "mean2", "logvar2"].map(|n| case.input_f64(n));
                out(&mut outputs, "kl", &ddpm::normal_kl(&m1?, &lv1?, &m2?, &lv2?).map_err(fail)?);
            }
            "discretized_gaussian_log_likelihood" => {
                let (x, means, log_scales) = (case.input_f64("x")?, case.input_f64("means")?, case.input_f64("log_scales")?);
                out(&mut outputs, "log_probs", &ddpm::discretized_gaussian_log_likelihood(&x, &means, &log_scales).map_err(fail)?);
            }
            "q_sample" => {
                let (s, t) = (case.schedule()?, case.param_timesteps()?);
                let x_t = ddpm::q_sample(&s, &case.input_f64("x_start")?, &t, &case.input_f64("noise")?).map_err(fail)?;
                out(&mut outputs, "x_t", &x_t);
            }
            "q_posterior_mean_variance" => {
                let (s, t) = (case.schedule()?, case.param_timesteps()?);
                let q = ddpm::q_posterior_mean_variance(&s, &case.input_f64("x_start")?, &case.input_f64("x_t")?, &t).map_err(fail)?;
                out(&mut outputs, "mean", &q.mean);
                out(&mut outputs, "variance", &q.variance);
                out(&mut outputs, "log_variance_clipped", &q.log_variance);
            }
            "p_mean_variance" => {
                let (s, t) = (case.schedule()?, case.param_timesteps()?);
                let (eps, x_t) = (case.input_f64("model_eps")?, case.input_f64("x_t")?);
                let p = ddpm::p_mean_variance(&s, &eps, &x_t, &t, case.reverse_options()?).map_err(fail)?;
                out(&mut outputs, "mean", &p.mean);
                out(&mut outputs, "variance", &p.variance);
                out(&mut outputs, "log_variance", &p.log_variance);
                out(&mut outputs, "pred_xstart", &p.pred_xstart);
            }
            "vb_terms_bpd" => {
                let (s, t) = (case.schedule()?, case.param_timesteps()?);
                let (eps, x_start, x_t) = (case.input_f64("model_eps")?, case.input_f64("x_start")?, case.input_f64("x_t")?);
                let vb = ddpm::vb_terms_bpd(&s, &eps, &x_start, &x_t, &t, case.reverse_options()?).map_err(fail)?;
                out(&mut outputs, "bpd", &vb.bpd);
                out(&mut outputs, "pred_xstart", &vb.pred_xstart);
            }
            "prior_bpd" => {
                let bpd = ddpm::prior_bpd(&case.schedule()?, &case.input_f64("x_start")?).map_err(fail)?;
                out(&mut outputs, "bpd", &bpd);
            }
            "p_sample" => {
                let (s, t) = (case.schedule()?, case.param_timesteps()?);
                let (eps, x_t, noise) = (case.input_f64("model_eps")?, case.input_f64("x_t")?, case.input_f64("noise")?);
                let step = ddpm::p_sample(&s, &eps, &x_t, &t, case.reverse_options()?, &noise).map_err(fail)?;
                out(&mut outputs, "sample", &step.sample);
            }
            "ddim_sample" => {
                let (s, t) = (case.schedule()?, case.param_timesteps()?);
                let (eps, x_t, noise) = (case.input_f64("model_eps")?, case.input_f64("x_t")?, case.input_f64("noise")?);
                let eta = case.params["eta"].as_f64().ok_or_else(|| fail("missing param eta"))?;
                let options = ddpm::DdimOptions {
                    eta,
                    parameterization: ddpm::Parameterization::Epsilon,
                    clip_denoised: case.param_bool("clip_denoised")?,
                };
                let step = ddpm::ddim_step(&s, &eps, &x_t, &t, options, &noise).map_err(fail)?;
                out(&mut outputs, "sample", &step.sample);
            }
            _ => unreachable!("run_diffusion_case is only called for diffusion kinds"),
        }
        Ok(outputs)
    };
    const DIFFUSION_KINDS: &[&str] = &[
        "schedule",
        "normal_kl",
        "discretized_gaussian_log_likelihood",
        "q_sample",
        "q_posterior_mean_variance",
        "p_mean_variance",
        "vb_terms_bpd",
        "prior_bpd",
        "p_sample",
        "ddim_sample",
    ];
    DIFFUSION_KINDS.contains(&kind).then(run)
}

// ------------------------------------------------------------------ nn kinds (#4)

/// The kinds of the nn crate, or `None` for any other kind.
fn run_nn_case(kind: &str, case: &Case) -> Option<Result<Outputs, CaseError>> {
    match kind {
        "timestep_embedding" => Some(timestep_embedding_case(case)),
        "adamw_step" => Some(adamw_step_case(case)),
        _ => None,
    }
}

/// `[sin(t f_i), cos(t f_i)]`, `f_i = exp(-ln(10000) i / (dim/2 - 1))`, in f32.
fn timestep_embedding_case(case: &Case) -> Result<Outputs, CaseError> {
    let dim = case.param_usize("dim")?;
    let t = case.params["t"]
        .as_array()
        .ok_or_else(|| fail("missing param t"))?
        .iter()
        .map(|v| v.as_f64().ok_or_else(|| fail(format!("bad timestep {v}"))))
        .collect::<Result<Vec<f64>, CaseError>>()?;
    let embedding = nn::timestep_embedding::<f32>(&t, dim).map_err(fail)?;
    let mut outputs = Outputs::new();
    out(&mut outputs, "embedding", &embedding);
    Ok(outputs)
}

/// A model with one parameter, named `param`, for the optimizer case.
struct OneParam(Tensor<f32>);

impl nn::Module<f32> for OneParam {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<f32>)) {
        f(&nn::module::join(prefix, "param"), &self.0);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<f32>)) {
        f(&nn::module::join(prefix, "param"), &mut self.0);
    }
}

/// One `torch.optim.AdamW` step in f32 through the optimizer's public API: the
/// state before the update is loaded as named tensors (`step` is the count before
/// this update), the gradient comes in a `GradStore`.
fn adamw_step_case(case: &Case) -> Result<Outputs, CaseError> {
    use nn::Optimizer;
    let number = |name: &str| case.params[name].as_f64().ok_or_else(|| fail(format!("missing param {name}")));
    let hyper = nn::AdamHyper {
        lr: number("lr")?,
        beta1: number("beta1")?,
        beta2: number("beta2")?,
        eps: number("eps")?,
        weight_decay: nn::WeightDecay::Decoupled(number("weight_decay")?),
    };
    let step = case.param_usize("step")?;
    let mut model = OneParam(case.input_f32("param")?.requires_grad());
    let mut grads = tensor::GradStore::default();
    grads.accumulate(&model.0, case.input_f32("grad")?).map_err(fail)?;
    let mut adamw = nn::Adam::<f32>::with_hyper(hyper);
    let state = vec![
        ("step".to_string(), Tensor::scalar(step.saturating_sub(1) as f32)),
        ("exp_avg.param".to_string(), case.input_f32("exp_avg")?),
        ("exp_avg_sq.param".to_string(), case.input_f32("exp_avg_sq")?),
    ];
    adamw.load_state_tensors(&state).map_err(fail)?;
    adamw.step(&mut model, &grads).map_err(fail)?;
    let mut outputs = Outputs::new();
    out(&mut outputs, "param", &model.0);
    for (name, tensor) in adamw.state_tensors() {
        if let Some(buffer) = name.strip_suffix(".param") {
            out(&mut outputs, buffer, &tensor);
        }
    }
    Ok(outputs)
}

// ------------------------------------------------------------------------------

fn relative_l2(actual: &[f64], expected: &[f64]) -> f64 {
    let diff: f64 = actual.iter().zip(expected).map(|(a, e)| (a - e).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = expected.iter().map(|e| e * e).sum::<f64>().sqrt();
    diff / norm.max(1e-12)
}

#[test]
fn golden_cases() {
    let dir = golden_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the golden folder {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.json golden files in {}", dir.display());
    let (mut passed, mut failures, mut pending) = (0, Vec::new(), BTreeMap::<String, usize>::new());
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let file: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let kind = file["kind"].as_str().unwrap_or_else(|| panic!("{}: no kind", path.display())).to_string();
        for raw in file["cases"].as_array().unwrap_or_else(|| panic!("{}: no cases", path.display())) {
            let name = format!("{kind}/{}", raw["name"].as_str().unwrap_or("?"));
            let parse = |field: &str| -> BTreeMap<String, Golden> {
                raw[field]
                    .as_object()
                    .map(|o| o.iter().map(|(k, v)| (k.clone(), parse_tensor(v, &format!("{name} {k}")).unwrap())).collect())
                    .unwrap_or_default()
            };
            let case = Case { params: raw["params"].clone(), inputs: parse("inputs") };
            let expected = parse("expected");
            if expected.is_empty() {
                failures.push(format!("{name}: no expected outputs, so nothing to check"));
            }
            let tol = raw["tol"].as_f64().unwrap_or_else(|| panic!("{name}: no tol"));
            match run_case(&kind, &case) {
                Ok(actual) => {
                    for (key, want) in &expected {
                        match actual.get(key) {
                            None => failures.push(format!("{name}: no output {key}")),
                            Some(got) if got.shape != want.shape => {
                                failures.push(format!("{name}: {key} has shape {:?}, expected {:?}", got.shape, want.shape))
                            }
                            Some(got) if got.data.iter().any(|v| v.is_nan()) => failures.push(format!("{name}: {key} has NaN")),
                            Some(got) => {
                                let err = relative_l2(&got.data, &want.data);
                                if err > tol {
                                    failures.push(format!("{name}: {key} relative L2 error {err:.3e} > tol {tol:e}"));
                                }
                                // Also each slice along the first axis (a batch item, a
                                // timestep's term), so one large item cannot hide a wrong
                                // small one in the whole tensor's norm: stricter than the
                                // README's criterion (every shipped case met it when it came).
                                let row_len = (want.data.len() / want.shape.first().copied().unwrap_or(1).max(1)).max(1);
                                let rows = got.data.chunks(row_len).zip(want.data.chunks(row_len));
                                if let Some((i, err)) = rows.map(|(g, w)| relative_l2(g, w)).enumerate().find(|&(_, err)| err > tol) {
                                    failures.push(format!("{name}: {key}[{i}] relative L2 error {err:.3e} > tol {tol:e}"));
                                }
                            }
                        }
                    }
                    if PENDING.contains(&kind.as_str()) {
                        failures.push(format!("{name}: kind {kind} is implemented now; remove it from PENDING"));
                    }
                    passed += 1;
                }
                Err(CaseError::NotImplemented(k)) => *pending.entry(k).or_default() += 1,
                Err(CaseError::Failed(msg)) => failures.push(format!("{name}: {msg}")),
            }
        }
    }
    for (k, n) in &pending {
        eprintln!("golden: not implemented: {k} ({n} cases pending)");
    }
    eprintln!(
        "golden: {passed} cases run, {} failures, {} pending, from {}",
        failures.len(),
        pending.values().sum::<usize>(),
        dir.display()
    );
    assert!(failures.is_empty(), "golden failures:\n{}", failures.join("\n"));
}
