//! The mathematics of denoising diffusion probabilistic models (Ho et al. 2020), one
//! function per equation, in the naming of improved-diffusion's `gaussian_diffusion.py`.
//!
//! The files follow the order of the derivation: [`schedule`] (beta_t and everything
//! derived from it, in f64) → [`forward`] (q) → [`posterior`] (q(x_{t-1} | x_t, x_0)) →
//! [`reverse`] (p_theta) → [`likelihood`] (KL, decoder, erf) → [`bound`] (the ELBO terms)
//! → [`loss`] (training objectives) → [`predictor`] (eps_theta) → [`sampler`]. Beside
//! them: [`parameterization`] (what the network predicts: eps, x_0 or mu-tilde),
//! [`true_reverse`] (the exact q(x_{t-1} | x_t) of a dataset), [`continuous`] (the
//! reverse-time SDE and the probability-flow ODE) and [`variational`] (the tangent bound
//! on ln behind the ELBO).
//!
//! **Timesteps** are 0-based code indices everywhere: code `t` is the paper's `t + 1`
//! (see [`schedule`]). **Shapes**: a data batch is `[B, ...]`; timesteps are one per
//! batch item; schedule coefficients are read as `[B, 1, .., 1]` and broadcast.
//! The math runs on `Tensor<T>` for f32 (training) and f64 (verification); every
//! function built from tensor ops is differentiable.
//!
//! ```
//! use ddpm::{q_sample, training_losses, BetaSchedule, NoiseSchedule, TrainingOptions};
//! use tensor::{rng, Tensor};
//! let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
//! let mut rng = rng(0);
//! let x_start = Tensor::<f32>::rand_uniform(&[2, 1, 4, 4], -1.0, 1.0, &mut rng);
//! let noise = Tensor::<f32>::randn(&[2, 1, 4, 4], &mut rng);
//! let x_t = q_sample(&schedule, &x_start, &[10, 990], &noise)?; // x_t ~ q(x_t | x_0)
//! let w = Tensor::scalar(0.5f32).requires_grad();
//! let model = |x: &Tensor<f32>, _t: &[usize]| x.mul(&w); // eps_theta(x_t, t) = w x_t
//! let losses = training_losses(&schedule, &model, &x_start, &[10, 990], &noise, TrainingOptions::default())?;
//! let grads = losses.loss.backward()?;
//! assert!(grads.get(&w).is_some());
//! # assert_eq!(x_t.dims(), &[2, 1, 4, 4]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The derivations, their code and their checks
//!
//! "Ho" is Ho et al. 2020; "notes 000".."003" are the course notes, not shipped with the
//! code (`000_f8c94919962f9c7e.txt` lecture notes, `001_...` paper summary, `002_...` paper
//! reading, `003_...` derivation document; `notebooks-md/guides/` has a reading guide per
//! note); "DDIM" is Song et al. 2021, "N&D" Nichol & Dhariwal 2021.
//! Tests live in this crate's `tests/derivations_{forward,posterior,bound,sampling,continuous}.rs`,
//! `tests/timestep_sampling.rs`, `tests/weighting.rs`, `tests/errata.rs` and `tests/api.rs`;
//! every test named in a row calls the functions of its row.
//!
//! | # | Statement | Source | Function | Test |
//! |---|---|---|---|---|
//! | 1 | q(x_t \| x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) | Ho eq. 2; notes 003 eq. 1 | [`q_step_mean_variance`], [`q_step_sample`] | `one_forward_step_is_gaussian_with_mean_sqrt_alpha_x_and_variance_beta` |
//! | 2 | mu + sigma eps ~ N(mu, sigma^2) | notes 002 §2.4.1 | [`reparameterize`] | `reparameterisation_gives_the_moments_of_the_gaussian` |
//! | 3 | sqrt(a(1-b)) e1 + sqrt(1-a) e2 ~ N(0, (1-ab) I): a jump to x_{t-1} then one step is one jump to x_t | notes 002 §2.4.2; notes 003 eq. 2 | [`q_sample`], [`q_step_sample`] | `two_independent_gaussian_noises_merge_into_one` |
//! | 4 | q(x_t \| x_0) = N(sqrt(alpha-bar_t) x_0, (1 - alpha-bar_t) I) | Ho eq. 4; notes 002 §2.4.2; notes 003 eq. 3 | [`q_mean_variance`], [`q_sample`] | `iterating_the_one_step_chain_gives_the_closed_form`, `two_independent_gaussian_noises_merge_into_one` |
//! | 5 | x_0 = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t) | Ho §3.2; notes 000 | [`predict_xstart_from_eps`], [`predict_eps_from_xstart`] | `predict_xstart_from_eps_inverts_q_sample` |
//! | 6 | q(x_t \| x_{t-1}, x_0) = q(x_{t-1} \| x_t, x_0) q(x_t \| x_0) / q(x_{t-1} \| x_0) | notes 002 §2.5.1; notes 003 §3 | [`q_posterior_mean_variance`] | `bayes_rule_for_the_posterior_holds_pointwise` |
//! | 7 | posterior = N(mu-tilde_t, beta-tilde_t I) by completing the square | Ho eqs. 6-7; notes 002 §2.6; notes 003 §3 | [`q_posterior_mean_variance`] | `completing_the_square_gives_the_posterior_mean_and_variance` |
//! | 8 | mu-tilde_t = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) eps) | Ho eq. 10; notes 002 §3.2 | [`q_posterior_mean_from_eps`] | `posterior_mean_in_eps_form_matches_the_x0_form` |
//! | 9 | closed-form KL of two Gaussians | Ho §2 (Rao-Blackwellised terms) | [`normal_kl`] | `closed_form_gaussian_kl_equals_its_monte_carlo_estimate` |
//! | 10 | equal-variance KL = \|mu1 - mu2\|^2 / (2 sigma^2) = w_t \|eps - eps_theta\|^2, w_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha-bar_t)) | Ho eqs. 8, 12; notes 002 §3.2; notes 003 §3.1 | [`noise_mse_weight`], [`vb_terms_bpd`] | `equal_variance_kl_is_a_weighted_noise_mse` |
//! | 11 | E_q[log q(x_{1:T} \| x_0) / p(x_{0:T})] = L_T + sum L_{t-1} + L_0 | Ho eq. 5; notes 002 §2.5; notes 003 §3.1 | [`prior_bpd`], [`vb_terms_bpd`], [`calc_bpd_loop`] | `the_bound_two_ways_monte_carlo_equals_the_sum_of_closed_form_terms`, `calc_bpd_loop_sums_one_sample_estimates_of_every_term` |
//! | 12 | -log p(x_0) <= L, gap = KL(q(x_{1:T} \| x_0) \|\| p(x_{1:T} \| x_0)) | notes 003 eq. 9; notes 000; notes 002 §2.3.2 | [`prior_bpd`], [`vb_terms_bpd`] | `the_bound_is_a_bound_and_its_gap_is_the_path_kl` |
//! | 13 | L_T = KL(q(x_T \| x_0) \|\| N(0, I)) in closed form, ~ 0, no trainable parameter | Ho §3.1; notes 002 §3.1 | [`prior_bpd`] | `prior_term_is_near_zero_and_has_no_trainable_parameter` |
//! | 14 | the discretised decoder's 256 bins sum to 1 | Ho eq. 13 | [`discretized_gaussian_log_likelihood`], [`discretized_gaussian_log_likelihood_exact`] | `discretized_decoder_bin_probabilities_sum_to_one`, `exact_decoder_bins_far_in_either_tail_match_their_integral` |
//! | 15 | Var[x_{t-1} \| x_t] = beta-tilde_t + coef1_t^2 Var[x_0 \| x_t] >= beta-tilde_t for any data; <= beta_t iff Var[x_0 \| x_t] <= 1 - alpha-bar_t (every x_t for Gaussian data of variance <= 1, on average over x_t for any data of variance <= 1); conventions at t = 0 | Ho §3.2; notes 002 §3.2 | [`VarianceKind::variances`] | `beta_and_beta_tilde_bracket_the_reverse_variance`, `note002_and_crate_docs_beta_tilde_and_beta_bracket_the_reverse_variance_only_under_conditions` (`crates/ddpm/tests/errata.rs`) |
//! | 16 | the optimal eps_theta is E[eps \| x_t] and minimises L_simple | notes 000; Ho eq. 14 | [`DatasetOptimalPredictor`], [`training_losses`] | `the_exact_noise_predictor_minimises_l_simple`, `l_simple_of_the_exact_predictor_equals_its_quadrature_floor`, `training_losses_follow_their_definitions`, `the_dataset_posterior_is_bayes_rule_even_where_every_likelihood_underflows`, `the_exact_predictors_read_each_batch_item_at_its_own_timestep` |
//! | 17 | Algorithm 2 = a draw from p(x_{t-1} \| x_t) built from the posterior | Ho Alg. 2, eq. 11; notes 003 eq. 13 | [`p_mean_variance`], [`p_sample`], [`sample_ancestral`] | `algorithm_2_update_equals_a_draw_from_the_reverse_posterior_step`, `ancestral_sampling_with_the_exact_predictor_returns_the_data_points` |
//! | 18 | DDIM eta = 1 ~ ancestral with beta-tilde, on every step or on respaced ones; eta = 0 deterministic | DDIM eq. 12, §4.1; notes 000 | [`ddim_step`], [`sample_ddim`], [`sample_ancestral_respaced`] | `ddim_with_eta_one_matches_ancestral_and_with_eta_zero_is_deterministic`, `respaced_ddim_keeps_the_marginals_and_samples_the_data_distribution`, `respaced_ancestral_sampling_with_the_posterior_variance_is_ddim_with_eta_one` |
//! | 19 | a forward step is a Langevin step toward N(0, I); N(0, I) is stationary | notes 000 "DDPM <-> Langevin" | [`q_step_sample`], [`sample_langevin`] | `a_forward_step_is_a_langevin_step_toward_the_standard_normal`, `langevin_dynamics_with_the_exact_score_reaches_its_stationary_law` |
//! | 20 | with the exact predictor, sampling returns the data points | notes 000; Ho §3.2 | [`DatasetOptimalPredictor`], [`sample_ancestral`] | `ancestral_sampling_with_the_exact_predictor_returns_the_data_points` |
//! | 21 | variational transform: ln x = min_lambda (lambda x + b(lambda)), b(lambda) = -ln lambda - 1; the tangent at lambda = 1 / E w averages to Jensen's E ln w <= ln E w | notes 002 §2.3.1-2.3.2 | [`log_tangent`], [`log_tangent_intercept`], [`log_tangent_slope`] | `the_variational_transform_bounds_the_log_by_its_tangents` |
//! | 22 | ancestral sampling discretises Anderson's reverse-time SDE: the two samplers' laws differ by O(1/T) | notes 000 "DDPM = Anderson's reverse time SDE"; Song et al. 2021 eq. 6 | [`reverse_sde_step`], [`sample_reverse_sde`], [`sample_ancestral`] | `ancestral_sampling_discretises_andersons_reverse_time_sde`, `the_reverse_sde_and_ancestral_sampling_reach_the_same_mixture_marginal` |
//! | 23 | DDIM with eta = 0 is a first-order solver of the probability-flow ODE (exact flow for Gaussian data) | notes 000 "DDIM = Fokker-Planck equation"; Song et al. 2021 eq. 13 | [`gaussian_probability_flow`], [`sample_ddim`] | `the_gaussian_probability_flow_solves_its_ode`, `deterministic_ddim_converges_to_the_probability_flow_map_at_first_order` |
//! | 24 | q(x_{t-1} \| x_t) is a mixture of posteriors; its KL from the best Gaussian is O(beta_t^3) (O(beta_t^4) for equal weights) | Ho §2; notes 000 | [`q_reverse_step`] | `the_true_reverse_step_is_the_bayes_mixture`, `the_true_reverse_step_becomes_gaussian_as_beta_shrinks` |
//! | 25 | mu_theta may predict mu-tilde_t directly; L_{t-1} = lambda_t \|target - prediction\|^2 + C for mean, x_0 and eps | Ho §3.2, eqs. 8, 10, 12; notes 002 §3.2 | [`Parameterization::PosteriorMean`], [`predict_xstart_from_posterior_mean`], [`parameterization_mse_weight`], [`training_losses`] | `predicting_the_posterior_mean_is_a_third_equivalent_parameterisation` |
//! | — | x_0 parameterisation gives the same p(x_{t-1} \| x_t) | Ho §3.2 | [`Parameterization::StartX`] | `predicting_x0_or_eps_gives_the_same_reverse_step` |
//! | — | the velocity v = sqrt(alpha-bar_t) eps - sqrt(1 - alpha-bar_t) x_0 turns (x_0, eps) by the angle phi of x_t = cos(phi) x_0 + sin(phi) eps (v = d x_t / d phi); x_0 and eps come back by the inverse turn; it gives the same p(x_{t-1} \| x_t), its error weighs coef1_t^2 (1 - alpha-bar_t) / (2 sigma_t^2) in the bound and min-SNR's weight on it is min(SNR_t, gamma) / (SNR_t + 1) | Salimans & Ho 2022 §4 | [`velocity`], [`predict_xstart_from_v`], [`Parameterization::Velocity`] | `the_velocity_is_a_rotation_of_the_image_and_its_noise`, `predicting_the_posterior_mean_is_a_third_equivalent_parameterisation`, `min_snr_is_one_objective_in_x0_space_for_every_parameterization` |
//! | — | the linear schedule spans 1e-4..0.02 (scaled by 1000/T); the cosine schedule's alpha-bar is f(t/T)/f(0) | Ho §4; N&D eq. 17 | [`linear_betas`], [`cosine_betas`], [`NoiseSchedule::from_betas`] | `the_named_schedules_follow_their_definitions`, `every_schedule_array_has_one_value_per_step` |
//! | — | respacing keeps alpha-bar at the kept steps, both ends always kept | N&D §4; DDIM §4.2 | [`NoiseSchedule::respaced`], [`evenly_spaced_timesteps`] | `respaced_ddim_keeps_the_marginals_and_samples_the_data_distribution`, `evenly_spaced_timesteps_keep_both_ends_and_even_gaps` |
//! | — | erf, and the tanh CDF's error in the decoder | Ho eq. 13 | [`erf`], [`erfc`], [`approx_standard_normal_cdf`] | `erf_matches_reference_values_and_the_integral_of_the_gaussian`, `erfc_keeps_its_relative_precision_deep_in_the_tail`, `tanh_cdf_approximation_error_is_measured_and_bounded` |
//! | — | one timestep per stratum, t_i = floor(T (u + i) / B): each t_i uniform on 0..T, the batch mean of t / T varying by ((T/B)^2 - 1) / (12 T^2) instead of (T^2 - 1) / (12 T^2 B) | Ho Alg. 1 line 3; Kingma et al. 2021 (VDM) | [`stratified_timesteps`], [`TimestepSampling`] | `strata_keep_the_mean_and_divide_the_variance_by_the_batch`, `every_timestep_is_equally_likely_either_way`, `each_stratum_holds_one_timestep` |
//! | — | logit-normal timesteps, t = floor(T sigmoid(z)), z ~ N(0, 1): P(t) = Phi(logit((t + 1) / T)) - Phi(logit(t / T)), the objective reweighted by T P(t) towards the middle noise levels | Esser et al. 2024 (SD3) §3.1 | [`logit_normal_timesteps`], [`logit_normal_timestep_probability`] | `logit_normal_draws_follow_their_closed_form`, `logit_normal_probabilities_sum_to_one_and_mirror` |
//! | — | gradient of the vb and hybrid losses w.r.t. eps_theta | — | [`vb_terms_bpd`], [`training_losses`] | `vb_loss_gradient_matches_finite_differences` |
//! | — | every function matches improved-diffusion in f64 | — | all of the above | `tests/golden.rs` |
#![forbid(unsafe_code)]

pub mod bound;
pub mod continuous;
pub mod error;
pub mod forward;
pub mod gaussian;
pub mod likelihood;
pub mod loss;
mod names;
pub mod parameterization;
pub mod posterior;
pub mod predictor;
pub mod reverse;
pub mod sampler;
pub mod schedule;
pub mod true_reverse;
pub mod variational;

pub use bound::{calc_bpd_loop, mean_flat, prior_bpd, vb_terms_bpd, BoundTerms, VbTerms};
pub use continuous::{gaussian_probability_flow, reverse_sde_step, sample_reverse_sde};
pub use error::{Error, Result};
pub use forward::{
    predict_eps_from_xstart, predict_xstart_from_eps, predict_xstart_from_v, q_mean_variance, q_sample, q_step_mean_variance,
    q_step_sample, velocity,
};
pub use gaussian::{normal_log_density, reparameterize, DiagonalGaussian};
pub use likelihood::{
    approx_standard_normal_cdf, discretized_gaussian_log_likelihood, discretized_gaussian_log_likelihood_exact, erf, erfc, normal_kl,
    standard_normal_cdf,
};
pub use loss::{
    logit_normal_timestep_probability, logit_normal_timesteps, noise_mse_weight, sample_timesteps, stratified_timesteps, training_losses,
    LossKind, TimestepSampling, TimestepWeighting, TrainingLosses, TrainingOptions, HYBRID_LAMBDA,
};
pub use parameterization::{parameterization_mse_weight, predict_xstart_from_posterior_mean};
pub use posterior::{q_posterior_mean_from_eps, q_posterior_mean_variance};
pub use predictor::{DatasetOptimalPredictor, GaussianOptimalPredictor, NoisePredictor};
pub use reverse::{p_mean_variance, predict_xstart, Parameterization, ReverseOptions, ReverseStep, VarianceKind};
pub use sampler::{
    ddim_step, p_sample, sample_ancestral, sample_ancestral_respaced, sample_ddim, sample_langevin, DdimOptions, Frame, LangevinOptions,
    SampleStep, Trajectory,
};
pub use schedule::{coefficient_at, cosine_betas, evenly_spaced_timesteps, linear_betas, BetaSchedule, NoiseSchedule};
pub use true_reverse::{q_reverse_step, GaussianMixture};
pub use variational::{log_tangent, log_tangent_intercept, log_tangent_slope};
