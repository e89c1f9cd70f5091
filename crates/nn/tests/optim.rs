//! The optimizers against steps computed by hand, clipping, warmup, the EMA
//! against its closed form, and the state round trip a checkpoint relies on.

use nn::Result;
use nn::WeightDecay;
use nn::{adam_update, clip_grad_norm, Adam, AdamHyper, Ema, LinearWarmup, Module, Optimizer, Sgd, WarmupCosine};
use tensor::{GradStore, Tensor};

/// Two named parameters, `a` [2] and `b` [1].
#[derive(Clone, Debug)]
struct Pair {
    a: Tensor<f64>,
    b: Tensor<f64>,
}

impl Pair {
    fn new(a: &[f64], b: f64) -> Self {
        Pair { a: Tensor::from_slice(a, &[2]).unwrap().requires_grad(), b: Tensor::from_slice(&[b], &[1]).unwrap().requires_grad() }
    }

    /// Gradients `ga` for `a` and `gb` for `b`, as a backward pass would store them.
    fn grads(&self, ga: &[f64], gb: f64) -> GradStore<f64> {
        let mut grads = GradStore::default();
        grads.accumulate(&self.a, Tensor::from_slice(ga, &[2]).unwrap()).unwrap();
        grads.accumulate(&self.b, Tensor::from_slice(&[gb], &[1]).unwrap()).unwrap();
        grads
    }
}

impl Module<f64> for Pair {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<f64>)) {
        f(&nn::module::join(prefix, "a"), &self.a);
        f(&nn::module::join(prefix, "b"), &self.b);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<f64>)) {
        f(&nn::module::join(prefix, "a"), &mut self.a);
        f(&nn::module::join(prefix, "b"), &mut self.b);
    }
}

/// One optimizer step with the gradients `ga`, `gb`.
fn step(opt: &mut dyn Optimizer<f64>, model: &mut Pair, ga: &[f64], gb: f64) -> Result<()> {
    let grads = model.grads(ga, gb);
    opt.step(model, &grads)
}

fn close(actual: &[f64], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() < 1e-12, "{actual:?} vs {expected:?}");
    }
}

#[test]
fn sgd_with_momentum_matches_hand_computed_steps() -> Result<()> {
    let mut model = Pair::new(&[1.0, -2.0], 0.5);
    let mut sgd = Sgd::new(0.1, 0.9);
    // Step 1: b = g, p <- p - lr b.
    step(&mut sgd, &mut model, &[1.0, 2.0], -1.0)?;
    close(&model.a.to_vec(), &[1.0 - 0.1, -2.0 - 0.2]);
    close(&model.b.to_vec(), &[0.5 + 0.1]);
    // Step 2: b = mu b + g, with b the first gradient.
    step(&mut sgd, &mut model, &[0.5, 0.0], 1.0)?;
    let mu = 0.9;
    let (first_b, second_b) = (-1.0, 1.0);
    close(&model.a.to_vec(), &[0.9 - 0.1 * (mu * 1.0 + 0.5), -2.2 - 0.1 * (mu * 2.0 + 0.0)]);
    close(&model.b.to_vec(), &[0.6 - 0.1 * (mu * first_b + second_b)]);
    assert_eq!(sgd.steps(), 2);
    Ok(())
}

#[test]
fn sgd_weight_decay_adds_wd_p_to_the_gradient_before_the_momentum() -> Result<()> {
    // g' = g + wd p, b = mu b + g', p <- p - lr b, for two steps.
    let (lr, mu, wd) = (0.1, 0.5, 0.2);
    let mut model = Pair::new(&[1.0, -2.0], 0.5);
    let mut sgd = Sgd::new(lr, mu);
    sgd.weight_decay = wd;
    step(&mut sgd, &mut model, &[1.0, 2.0], -1.0)?;
    let b1 = [1.0 + wd * 1.0, 2.0 + wd * -2.0, -1.0 + wd * 0.5];
    let p1 = [1.0 - lr * b1[0], -2.0 - lr * b1[1], 0.5 - lr * b1[2]];
    close(&model.a.to_vec(), &p1[..2]);
    close(&model.b.to_vec(), &p1[2..]);
    step(&mut sgd, &mut model, &[0.5, 0.0], 1.0)?;
    let g2 = [0.5, 0.0, 1.0];
    let p2: Vec<f64> = (0..3).map(|i| p1[i] - lr * (mu * b1[i] + g2[i] + wd * p1[i])).collect();
    close(&model.a.to_vec(), &p2[..2]);
    close(&model.b.to_vec(), &p2[2..]);
    Ok(())
}

#[test]
fn adam_first_step_moves_each_weight_by_lr_against_the_gradient_sign() -> Result<()> {
    // Step 1: m = (1 - b1) g, v = (1 - b2) g^2, so m / (1 - b1) / sqrt(v / (1 - b2)) = sign(g)
    // and p moves by lr g / (|g| + eps).
    let mut model = Pair::new(&[1.0, -2.0], 0.5);
    let mut adam = Adam::new(0.01);
    step(&mut adam, &mut model, &[3.0, -0.5], 1e-3)?;
    let moved = |g: f64| 0.01 * g / (g.abs() + 1e-8);
    close(&model.a.to_vec(), &[1.0 - moved(3.0), -2.0 - moved(-0.5)]);
    close(&model.b.to_vec(), &[0.5 - moved(1e-3)]);
    Ok(())
}

#[test]
fn set_lr_sets_the_rate_of_the_next_step() -> Result<()> {
    // The training loop changes the rate every step (warmup, cosine decay) through
    // `set_lr`; the next update must use it: Adam's first step moves by lr sign(g),
    // SGD's by lr g.
    let mut model = Pair::new(&[1.0, -2.0], 0.5);
    let mut adam = Adam::new(0.01);
    adam.set_lr(0.004);
    assert_eq!(adam.lr(), 0.004);
    step(&mut adam, &mut model, &[3.0, -0.5], 2.0)?;
    close(&model.a.to_vec(), &[1.0 - 0.004 * 3.0 / (3.0 + 1e-8), -2.0 + 0.004 * 0.5 / (0.5 + 1e-8)]);
    let mut model = Pair::new(&[1.0, -2.0], 0.5);
    let mut sgd = Sgd::new(0.1, 0.0);
    sgd.set_lr(0.25);
    assert_eq!(sgd.lr(), 0.25);
    step(&mut sgd, &mut model, &[1.0, 2.0], -1.0)?;
    close(&model.a.to_vec(), &[1.0 - 0.25, -2.0 - 0.5]);
    close(&model.b.to_vec(), &[0.5 + 0.25]);
    Ok(())
}

#[test]
fn adam_second_step_matches_the_bias_corrected_moments() -> Result<()> {
    let mut model = Pair::new(&[1.0, -2.0], 0.5);
    let (lr, b1, b2, eps) = (0.01, 0.9, 0.999, 1e-8);
    let mut adam = Adam::new(lr);
    let (g1, g2) = ([3.0, -0.5], [1.0, 2.0]);
    step(&mut adam, &mut model, &g1, 0.0)?;
    step(&mut adam, &mut model, &g2, 0.0)?;
    let expected: Vec<f64> = [1.0, -2.0f64]
        .iter()
        .enumerate()
        .map(|(i, &p0)| {
            let p1 = p0 - lr * g1[i] / (g1[i].abs() + eps);
            let m = b1 * (1.0 - b1) * g1[i] + (1.0 - b1) * g2[i];
            let v = b2 * (1.0 - b2) * g1[i] * g1[i] + (1.0 - b2) * g2[i] * g2[i];
            let (m_hat, v_hat) = (m / (1.0 - b1 * b1), v / (1.0 - b2 * b2));
            p1 - lr * m_hat / (v_hat.sqrt() + eps)
        })
        .collect();
    close(&model.a.to_vec(), &expected);
    // b's gradient is 0 at both steps: m = v = 0 and it does not move.
    close(&model.b.to_vec(), &[0.5]);
    assert_eq!(adam.steps(), 2);
    Ok(())
}

#[test]
fn adamw_decays_the_weights_before_the_adam_step_and_adam_folds_l2_into_the_gradient() -> Result<()> {
    let (lr, wd) = (0.1, 0.5);
    // Zero gradient: AdamW still shrinks p by (1 - lr wd); Adam's moments see wd p.
    let mut model = Pair::new(&[2.0, -4.0], 1.0);
    step(&mut Adam::adamw(lr, wd), &mut model, &[0.0, 0.0], 0.0)?;
    close(&model.a.to_vec(), &[2.0 * (1.0 - lr * wd), -4.0 * (1.0 - lr * wd)]);
    let mut model = Pair::new(&[2.0, -4.0], 1.0);
    let mut adam_l2 = Adam::with_hyper(nn::AdamHyper { weight_decay: nn::WeightDecay::L2(wd), ..Adam::<f64>::new(lr).hyper });
    step(&mut adam_l2, &mut model, &[0.0, 0.0], 0.0)?;
    // The first step moves by lr sign(wd p), i.e. lr towards zero.
    let moved = |g: f64| lr * g / (g.abs() + 1e-8);
    close(&model.a.to_vec(), &[2.0 - moved(wd * 2.0), -4.0 - moved(wd * -4.0)]);
    Ok(())
}

#[test]
fn parameters_without_a_gradient_are_left_alone() -> Result<()> {
    let mut model = Pair::new(&[1.0, 2.0], 3.0);
    let mut grads = GradStore::default();
    grads.accumulate(&model.a, Tensor::from_slice(&[1.0, 1.0], &[2])?)?;
    Adam::new(0.1).step(&mut model, &grads)?;
    assert_eq!(model.b.to_vec(), vec![3.0]);
    assert_ne!(model.a.to_vec(), vec![1.0, 2.0]);
    Ok(())
}

#[test]
fn optimizer_state_round_trips_through_named_tensors() -> Result<()> {
    let mut model = Pair::new(&[1.0, -2.0], 0.5);
    let mut adam = Adam::adamw(0.01, 0.1);
    step(&mut adam, &mut model, &[3.0, -0.5], 1.0)?;
    let state = adam.state_tensors();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["step", "exp_avg.a", "exp_avg.b", "exp_avg_sq.a", "exp_avg_sq.b"]);
    // A fresh optimizer loaded with the state continues exactly like the original.
    let mut resumed = Adam::adamw(0.01, 0.1);
    resumed.load_state_tensors(&state)?;
    let mut copy = model.clone();
    step(&mut adam, &mut model, &[1.0, 1.0], -1.0)?;
    step(&mut resumed, &mut copy, &[1.0, 1.0], -1.0)?;
    assert_eq!(model.a.to_vec(), copy.a.to_vec());
    assert_eq!(model.b.to_vec(), copy.b.to_vec());
    assert!(resumed.load_state_tensors(&[("momentum.a".to_string(), Tensor::zeros(&[2]))]).is_err());

    // SGD's state is its step count and momentum buffers; a resumed SGD that lost the
    // buffers would take the next step with b = g instead of mu b + g.
    let mut model = Pair::new(&[1.0, -2.0], 0.5);
    let mut sgd = Sgd::new(0.1, 0.9);
    step(&mut sgd, &mut model, &[3.0, -0.5], 1.0)?;
    let state = sgd.state_tensors();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["step", "momentum_buffer.a", "momentum_buffer.b"]);
    let mut resumed = Sgd::new(0.1, 0.9);
    resumed.load_state_tensors(&state)?;
    assert_eq!(resumed.steps(), 1);
    let mut copy = model.clone();
    step(&mut sgd, &mut model, &[1.0, 1.0], -1.0)?;
    step(&mut resumed, &mut copy, &[1.0, 1.0], -1.0)?;
    assert_eq!(model.a.to_vec(), copy.a.to_vec());
    assert_eq!(model.b.to_vec(), copy.b.to_vec());
    Ok(())
}

#[test]
fn clip_grad_norm_scales_to_the_max_norm_and_returns_the_norm_before() -> Result<()> {
    // ||(3, 4, 12)|| = 13.
    let model = Pair::new(&[0.0, 0.0], 0.0);
    let mut grads = model.grads(&[3.0, 4.0], 12.0);
    let norm = clip_grad_norm(&model, &mut grads, 1.0)?;
    assert!((norm - 13.0).abs() < 1e-12);
    let scale = 1.0 / (13.0 + 1e-6);
    close(&grads.get(&model.a).unwrap().to_vec(), &[3.0 * scale, 4.0 * scale]);
    close(&grads.get(&model.b).unwrap().to_vec(), &[12.0 * scale]);
    // Below the threshold nothing changes.
    let mut grads = model.grads(&[3.0, 4.0], 12.0);
    assert!((clip_grad_norm(&model, &mut grads, 100.0)? - 13.0).abs() < 1e-12);
    close(&grads.get(&model.a).unwrap().to_vec(), &[3.0, 4.0]);
    Ok(())
}

#[test]
fn linear_warmup_ramps_then_holds() {
    let warmup = LinearWarmup { base_lr: 2e-4, warmup_steps: 100 };
    assert!((warmup.lr_at(1) - 2e-6).abs() < 1e-18);
    assert!((warmup.lr_at(50) - 1e-4).abs() < 1e-18);
    assert_eq!(warmup.lr_at(100), 2e-4);
    assert_eq!(warmup.lr_at(10_000), 2e-4);
    assert_eq!(LinearWarmup { base_lr: 1.0, warmup_steps: 0 }.lr_at(1), 1.0);
}

#[test]
fn cosine_decay_follows_its_closed_form_after_the_warmup() {
    let schedule = WarmupCosine { warmup: LinearWarmup { base_lr: 2e-3, warmup_steps: 100 }, total_steps: 1100 };
    // Warmup: the linear ramp, untouched.
    assert!((schedule.lr_at(50) - 1e-3).abs() < 1e-15);
    assert_eq!(schedule.lr_at(100), 2e-3);
    // cos(pi / 2) = 0 halfway through the decay, cos(pi / 3) = 1/2 a third of the way.
    assert!((schedule.lr_at(600) - 1e-3).abs() < 1e-15);
    assert!((schedule.lr_at(100 + 1000 / 3) - 2e-3 * 0.75).abs() < 2e-3 * 0.01);
    assert!(schedule.lr_at(1100).abs() < 1e-18 && schedule.lr_at(5000).abs() < 1e-18);
    assert!((101..1100).all(|s| schedule.lr_at(s + 1) < schedule.lr_at(s)), "strictly decreasing");
}

#[test]
fn ema_warmup_averages_the_whole_run_at_first() -> Result<()> {
    // Weights held at c from shadow_0 = p_0: shadow_n = c + (p_0 - c) prod_{k<n} d_k, and
    // with d_k = (1 + k) / (10 + k) the product telescopes to 9! n! / (n + 9)! = 1 / C(n + 9, 9).
    let mut model = Pair::new(&[1.0, -2.0], 0.5);
    let mut ema = Ema::new(&model, 0.999).with_warmup(true);
    let c = 3.0;
    model.visit_params_mut("", &mut |_, p| p.update_data(|d| d.fill(c)));
    let mut binomial = 1.0; // C(n + 9, 9)
    for n in 1..=30 {
        ema.update(&model)?;
        binomial *= f64::from(n + 9) / f64::from(n);
        close(&ema.shadow[1].1.to_vec(), &[c + (0.5 - c) / binomial]);
    }
    // Past (1 + n) / (10 + n) = decay the fixed decay takes over.
    ema.num_updates = 9000;
    assert_eq!(ema.current_decay(), 0.999);
    assert_eq!(Ema::new(&model, 0.999).current_decay(), 0.999, "no warmup unless asked");
    Ok(())
}

#[test]
fn ema_towards_constant_weights_follows_the_closed_form() -> Result<()> {
    // shadow_0 = p_0, then the weights are held at c: shadow_n = c + (p_0 - c) d^n.
    let mut model = Pair::new(&[1.0, -2.0], 0.5);
    let decay = 0.9;
    let mut ema = Ema::new(&model, decay);
    let c = 3.0;
    model.visit_params_mut("", &mut |_, p| p.update_data(|d| d.fill(c)));
    for n in 1..=20 {
        ema.update(&model)?;
        let expected = |p0: f64| c + (p0 - c) * decay.powi(n);
        close(&ema.shadow[0].1.to_vec(), &[expected(1.0), expected(-2.0)]);
        close(&ema.shadow[1].1.to_vec(), &[expected(0.5)]);
    }
    assert_eq!(ema.num_updates, 20);
    // From zero weights: shadow_n = c (1 - d^n).
    let zero = Pair::new(&[0.0, 0.0], 0.0);
    let mut ema = Ema::new(&zero, decay);
    for _ in 0..5 {
        ema.update(&model)?;
    }
    close(&ema.shadow[1].1.to_vec(), &[c * (1.0 - decay.powi(5))]);
    Ok(())
}

#[test]
fn ema_copies_its_average_into_a_model_clone() -> Result<()> {
    let model = Pair::new(&[1.0, -2.0], 0.5);
    let mut ema = Ema::new(&model, nn::DEFAULT_EMA_DECAY);
    let mut trained = model.clone();
    trained.visit_params_mut("", &mut |_, p| p.update_data(|d| d.fill(7.0)));
    ema.update(&trained)?;
    let sampler = ema.averaged_copy(&trained)?;
    let expected = |p0: f64| 0.9999 * p0 + 0.0001 * 7.0;
    close(&sampler.a.to_vec(), &[expected(1.0), expected(-2.0)]);
    assert_eq!(trained.a.to_vec(), vec![7.0, 7.0], "the raw weights are untouched");
    assert!(sampler.a.requires_grad_flag());
    Ok(())
}

/// A second module of two parameters `a` [2] and `c` [1]: not `Pair`'s parameters.
struct Other(Pair);

impl Module<f64> for Other {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<f64>)) {
        f(&nn::module::join(prefix, "a"), &self.0.a);
        f(&nn::module::join(prefix, "c"), &self.0.b);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<f64>)) {
        f(&nn::module::join(prefix, "a"), &mut self.0.a);
        f(&nn::module::join(prefix, "c"), &mut self.0.b);
    }
}

#[test]
fn parameter_errors_name_the_parameter() -> Result<()> {
    // An optimizer state of another shape than its parameter, and an entry of no known kind.
    let mut model = Pair::new(&[1.0, -2.0], 0.5);
    let mut adam = Adam::adamw(1e-3, 0.0);
    adam.load_state_tensors(&[("exp_avg.a".to_string(), Tensor::zeros(&[3]))])?;
    let error = step(&mut adam, &mut model, &[1.0, 2.0], 1.0).unwrap_err().to_string();
    assert!(error.starts_with("optimizer state: a: ") && error.contains("[3]") && error.contains("[2]"), "{error}");
    let error = adam.load_state_tensors(&[("momentum.a".to_string(), Tensor::zeros(&[2]))]).unwrap_err().to_string();
    assert!(error.contains("momentum.a") && error.contains("exp_avg"), "{error}");
    // An EMA asked to average another model than the one it started from.
    let mut ema = Ema::new(&model, 0.9);
    let error = ema.update(&Other(model.clone())).unwrap_err().to_string();
    assert!(error.starts_with("Ema: c: ") && error.contains("the average holds b"), "{error}");
    Ok(())
}

/// A parameter large enough for its update to be split between the threads
/// gets the same bits as each of its elements updated alone (the update is
/// elementwise), with both kinds of weight decay, over three steps.
#[test]
fn adam_update_on_the_threads_equals_the_update_element_by_element() {
    let n = 50_000 + 7;
    let wave = |scale: f32, phase: f32| (0..n).map(|i| scale * (i as f32 * 0.37 + phase).sin()).collect::<Vec<f32>>();
    for weight_decay in [WeightDecay::Decoupled(0.01), WeightDecay::L2(0.1)] {
        let hyper = AdamHyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay };
        let (mut p, mut m, mut v) = (wave(1.0, 0.0), vec![0.0f32; n], vec![0.0f32; n]);
        let (mut p1, mut m1, mut v1) = (p.clone(), m.clone(), v.clone());
        for step in 1..=3 {
            let grad = wave(0.5, step as f32);
            adam_update(&hyper, step, &mut p, &grad, &mut m, &mut v);
            for i in 0..n {
                adam_update(&hyper, step, &mut p1[i..=i], &grad[i..=i], &mut m1[i..=i], &mut v1[i..=i]);
            }
        }
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        assert!(bits(&p) == bits(&p1) && bits(&m) == bits(&m1) && bits(&v) == bits(&v1), "{weight_decay:?}");
        let moved = p.iter().zip(wave(1.0, 0.0)).filter(|(a, b)| a != &b).count();
        assert!(moved > n * 99 / 100, "{weight_decay:?}: {moved} of {n} weights moved");
    }
}

/// Forty parameters of mixed sizes.
struct Many(Vec<Tensor<f64>>);

impl Module<f64> for Many {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<f64>)) {
        for (i, p) in self.0.iter().enumerate() {
            f(&nn::module::join(prefix, &i.to_string()), p);
        }
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<f64>)) {
        for (i, p) in self.0.iter_mut().enumerate() {
            f(&nn::module::join(prefix, &i.to_string()), p);
        }
    }
}

/// The parameters' sums of squares, taken on the threads, are added in
/// parameter order: the norm has the bits of one serial loop over every
/// gradient, parameter by parameter (numbers of mixed magnitude, so that
/// another order would round differently).
#[test]
fn clip_grad_norm_adds_in_parameter_order_bit_for_bit() -> Result<()> {
    let sizes: Vec<usize> = (0..40).map(|i| 1 + (i * 7919) % 5000).collect();
    let model = Many(sizes.iter().map(|&n| Tensor::zeros(&[n]).requires_grad()).collect());
    let mut grads = GradStore::default();
    let mut serial = 0.0f64;
    for (i, (p, &n)) in model.0.iter().zip(&sizes).enumerate() {
        let g: Vec<f64> = (0..n).map(|j| ((i * 31 + j) as f64 * 0.61).sin() * 10f64.powi((j % 7) as i32 - 3)).collect();
        serial += g.iter().map(|v| v.powi(2)).sum::<f64>();
        grads.accumulate(p, Tensor::from_vec(g, &[n])?)?;
    }
    let norm = clip_grad_norm(&model, &mut grads, f64::INFINITY)?;
    assert_eq!(norm.to_bits(), serial.sqrt().to_bits());
    Ok(())
}
