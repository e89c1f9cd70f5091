//! The crate's contract at its edges: bad input is an error naming what is wrong,
//! never a panic; the training losses are what their docs say.

use ddpm::{
    q_sample, sample_timesteps, training_losses, BetaSchedule, Error, LossKind, NoiseSchedule, Parameterization, TrainingOptions,
    VarianceKind,
};
use tensor::{rng, Tensor};

#[test]
fn bad_input_is_an_error_that_names_the_problem() {
    // the linear schedule scales its betas by 1000/T, so short schedules are rejected (beta > 1)
    assert!(matches!(NoiseSchedule::new(BetaSchedule::Linear, 10), Err(Error::InvalidSchedule { .. })));
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 100).unwrap();
    let x = Tensor::<f64>::zeros(&[2, 3]);
    let err = q_sample(&schedule, &x, &[0, 100], &x).unwrap_err();
    assert!(matches!(err, Error::TimestepOutOfRange { t: 100, num_timesteps: 100, .. }), "{err}");
    assert!(err.to_string().contains("timestep 100"), "{err}");
    let err = q_sample(&schedule, &x, &[0], &x).unwrap_err();
    assert!(matches!(err, Error::BatchMismatch { timesteps: 1, .. }), "{err}");
    assert!(matches!(NoiseSchedule::from_betas(vec![0.1]), Err(Error::InvalidSchedule { .. })));
    assert!(matches!(NoiseSchedule::from_betas(vec![0.1, 1.5]), Err(Error::InvalidSchedule { .. })));
    // beta = 1 would make alpha-bar zero (T = 20 is the linear schedule's edge).
    assert!(matches!(NoiseSchedule::from_betas(vec![0.1, 1.0]), Err(Error::InvalidSchedule { .. })));
    assert!(matches!(NoiseSchedule::new(BetaSchedule::Linear, 20), Err(Error::InvalidSchedule { .. })));
    assert!(NoiseSchedule::new(BetaSchedule::Linear, 21).is_ok());
    assert!("quadratic".parse::<BetaSchedule>().is_err());
    assert!("learned".parse::<VarianceKind>().is_err());
    // One spelling each way: every name parses back to the value that displays it.
    for (name, kind) in VarianceKind::NAMES {
        assert_eq!((name.parse::<VarianceKind>().ok(), kind.to_string()), (Some(kind), name.to_string()));
    }
    for (name, kind) in LossKind::NAMES {
        assert_eq!((name.parse::<LossKind>().ok(), kind.to_string()), (Some(kind), name.to_string()));
    }
    assert!(schedule.respaced(&[3, 2]).is_err());
    let wrong_shape = |_: &Tensor<f64>, _: &[usize]| Ok(Tensor::<f64>::zeros(&[2, 4]));
    assert!(training_losses(&schedule, &wrong_shape, &x, &[0, 1], &x, TrainingOptions::default()).is_err());
}

#[test]
fn training_losses_follow_their_definitions() -> Result<(), Box<dyn std::error::Error>> {
    // L_simple = mean |eps - eps_theta|^2; x_0 prediction regresses x_0; L_vlb = T * vb; hybrid = L_simple + lambda L_vlb.
    let schedule = NoiseSchedule::new(BetaSchedule::Cosine, 100)?;
    let mut rng = rng(1);
    let (x_start, noise) = (Tensor::<f32>::rand_uniform(&[4, 1, 2, 2], -1.0, 1.0, &mut rng), Tensor::<f32>::randn(&[4, 1, 2, 2], &mut rng));
    let t = sample_timesteps(100, 4, &mut rng);
    assert!(t.iter().all(|&s| s < 100));
    let prediction = Tensor::<f32>::randn(&[4, 1, 2, 2], &mut rng);
    let model = |_: &Tensor<f32>, _: &[usize]| Ok(prediction.clone());
    let simple = training_losses(&schedule, &model, &x_start, &t, &noise, TrainingOptions::default())?;
    assert!((simple.loss.item()? - prediction.mse_loss(&noise)?.item()?).abs() < 1e-6);
    let x0_options = TrainingOptions { parameterization: Parameterization::StartX, ..TrainingOptions::default() };
    let x0 = training_losses(&schedule, &model, &x_start, &t, &noise, x0_options)?;
    assert!((x0.loss.item()? - prediction.mse_loss(&x_start)?.item()?).abs() < 1e-6);
    let vlb = training_losses(&schedule, &model, &x_start, &t, &noise, TrainingOptions { loss: LossKind::Vlb, ..TrainingOptions::default() })?;
    let vb = vlb.vb.clone().unwrap().mean_all()?.item()?;
    assert!((vlb.loss.item()? - 100.0 * vb).abs() < 1e-3 * vlb.loss.item()?.abs());
    let hybrid_options = TrainingOptions { loss: LossKind::Hybrid, ..TrainingOptions::default() };
    let hybrid = training_losses(&schedule, &model, &x_start, &t, &noise, hybrid_options)?;
    assert!((hybrid.loss.item()? - (simple.loss.item()? + 0.001 * 100.0 * vb)).abs() < 1e-4);
    Ok(())
}
