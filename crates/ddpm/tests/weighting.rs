//! Min-SNR-gamma weighting (Hang et al. 2023): one objective, whichever quantity the
//! network predicts. On the noise it weighs `min(SNR_t, gamma) / SNR_t`; on x_0 it
//! weighs `min(SNR_t, gamma)`; on the posterior mean `min(SNR_t, gamma) / coef1_t^2`;
//! on the velocity `min(SNR_t, gamma) / (SNR_t + 1)`; all are
//! `min(SNR_t, gamma) |x_0 - x0_hat|^2`.

use ddpm::{training_losses, BetaSchedule, NoiseSchedule, Parameterization, TimestepWeighting, TrainingOptions};
use tensor::{rng, Tensor};

const GAMMA: f64 = 5.0;

/// x_t = sqrt(alpha-bar) x_0 + sqrt(1 - alpha-bar) eps, written out by hand.
fn noised(schedule: &NoiseSchedule, x_start: &[f64], noise: &[f64], t: &[usize], per_item: usize) -> Vec<f64> {
    (0..x_start.len())
        .map(|i| {
            let a = schedule.alphas_cumprod[t[i / per_item]];
            a.sqrt() * x_start[i] + (1.0 - a).sqrt() * noise[i]
        })
        .collect()
}

#[test]
fn min_snr_is_one_objective_in_x0_space_for_every_parameterization() -> Result<(), Box<dyn std::error::Error>> {
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let (batch, per_item) = (6, 4);
    let mut rng = rng(7);
    let x_start = Tensor::<f64>::rand_uniform(&[batch, per_item], -1.0, 1.0, &mut rng);
    let noise = Tensor::<f64>::randn(&[batch, per_item], &mut rng);
    // Timesteps on both sides of SNR = gamma (alpha-bar = 5/6 near t = 80 here).
    let t = [0, 10, 60, 120, 500, 999];
    // A noise predictor that reads x_t and t, so feeding it the wrong input changes the loss.
    let eps_model = |x_t: &Tensor<f64>, t: &[usize]| -> tensor::Result<Tensor<f64>> {
        let shift = Tensor::from_vec(t.iter().map(|&s| s as f64 / 1000.0).collect(), &[t.len(), 1])?;
        x_t.mul_scalar(0.5).add(&shift)
    };
    let options = TrainingOptions { weighting: TimestepWeighting::MinSnr { gamma: GAMMA }, ..TrainingOptions::default() };
    let eps_loss = training_losses(&schedule, &eps_model, &x_start, &t, &noise, options)?.loss.item()?;

    // The same predictions turned into x0_hat by hand, scored with min(SNR, gamma).
    let (x0, eps) = (x_start.to_vec(), noise.to_vec());
    let x_t = noised(&schedule, &x0, &eps, &t, per_item);
    let mut expected = 0.0;
    let mut x0_hat = vec![0.0; x0.len()];
    for (b, &t_b) in t.iter().enumerate().take(batch) {
        let a = schedule.alphas_cumprod[t_b];
        let snr = a / (1.0 - a);
        let mut sq = 0.0;
        for i in b * per_item..(b + 1) * per_item {
            let eps_hat = 0.5 * x_t[i] + t_b as f64 / 1000.0;
            x0_hat[i] = (x_t[i] - (1.0 - a).sqrt() * eps_hat) / a.sqrt();
            sq += (x0[i] - x0_hat[i]).powi(2);
        }
        expected += snr.min(GAMMA) * sq / per_item as f64;
    }
    expected /= batch as f64;
    assert!((eps_loss - expected).abs() <= 1e-9 * expected.abs(), "eps form {eps_loss} vs x_0 form {expected}");

    // A network that predicts x_0 directly, with the same x0_hat, has the same loss.
    let x0_prediction = Tensor::from_vec(x0_hat.clone(), &[batch, per_item])?;
    let x0_model = |_: &Tensor<f64>, _: &[usize]| Ok(x0_prediction.clone());
    let x0_options = TrainingOptions { parameterization: Parameterization::StartX, ..options };
    let x0_loss = training_losses(&schedule, &x0_model, &x_start, &t, &noise, x0_options)?.loss.item()?;
    assert!((x0_loss - expected).abs() <= 1e-9 * expected.abs(), "x_0 form {x0_loss} vs {expected}");

    // A network that predicts the posterior mean mu-tilde = coef1 x0_hat + coef2 x_t, too.
    let mu_hat: Vec<f64> = (0..x0.len())
        .map(|i| {
            let s = t[i / per_item];
            schedule.posterior_mean_coef1[s] * x0_hat[i] + schedule.posterior_mean_coef2[s] * x_t[i]
        })
        .collect();
    let mu_prediction = Tensor::from_vec(mu_hat, &[batch, per_item])?;
    let mu_model = |_: &Tensor<f64>, _: &[usize]| Ok(mu_prediction.clone());
    let mu_options = TrainingOptions { parameterization: Parameterization::PosteriorMean, ..options };
    let mu_loss = training_losses(&schedule, &mu_model, &x_start, &t, &noise, mu_options)?.loss.item()?;
    assert!((mu_loss - expected).abs() <= 1e-9 * expected.abs(), "mu-tilde form {mu_loss} vs {expected}");

    // And one that predicts the velocity v = sqrt(alpha-bar) eps_hat - sqrt(1 - alpha-bar) x0_hat of the same x0_hat.
    let v_hat: Vec<f64> = (0..x0.len())
        .map(|i| {
            let a = schedule.alphas_cumprod[t[i / per_item]];
            let eps_hat = (x_t[i] - a.sqrt() * x0_hat[i]) / (1.0 - a).sqrt();
            a.sqrt() * eps_hat - (1.0 - a).sqrt() * x0_hat[i]
        })
        .collect();
    let v_prediction = Tensor::from_vec(v_hat, &[batch, per_item])?;
    let v_model = |_: &Tensor<f64>, _: &[usize]| Ok(v_prediction.clone());
    let v_options = TrainingOptions { parameterization: Parameterization::Velocity, ..options };
    let v_loss = training_losses(&schedule, &v_model, &x_start, &t, &noise, v_options)?.loss.item()?;
    assert!((v_loss - expected).abs() <= 1e-9 * expected.abs(), "v form {v_loss} vs {expected}");
    Ok(())
}

#[test]
fn min_snr_weights_only_the_clean_timesteps() -> Result<(), Box<dyn std::error::Error>> {
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let weighting = TimestepWeighting::MinSnr { gamma: GAMMA };
    for t in 0..1000 {
        let a = schedule.alphas_cumprod[t];
        let snr = a / (1.0 - a);
        let w = weighting.weight(&schedule, t, Parameterization::Epsilon);
        if snr <= GAMMA {
            assert_eq!(w, 1.0, "t = {t}: SNR {snr} below gamma keeps weight 1");
        } else {
            assert!((w - GAMMA / snr).abs() < 1e-15 && w < 1.0, "t = {t}: weight {w}, SNR {snr}");
        }
    }
    // A gamma above every SNR is L_simple again.
    let huge = TimestepWeighting::MinSnr { gamma: 1e12 };
    assert!((0..1000).all(|t| (huge.weight(&schedule, t, Parameterization::Epsilon) - 1.0).abs() < 1e-12));
    Ok(())
}
