//! Learning-rate schedules: a linear warmup (DDPM: 5000 steps), then either a
//! constant rate or a cosine decay to zero at the last step.

/// `lr(step) = base_lr * min(1, step / warmup_steps)` for the 1-based `step`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearWarmup {
    pub base_lr: f64,
    /// 0 means no warmup.
    pub warmup_steps: u64,
}

impl LinearWarmup {
    /// The learning rate of update number `step` (1-based).
    #[must_use]
    pub fn lr_at(&self, step: u64) -> f64 {
        if self.warmup_steps == 0 {
            return self.base_lr;
        }
        self.base_lr * (step as f64 / self.warmup_steps as f64).min(1.0)
    }
}

/// The linear warmup, then a half cosine from `base_lr` down to 0 at `total_steps`
/// (Loshchilov & Hutter 2017, "SGDR", without restarts):
///
/// `lr(step) = base_lr * (1 + cos(pi p)) / 2`, `p = (step - warmup) / (total - warmup)`.
///
/// A short run gains most from it: the large early rate moves fast, the small late
/// rate settles the weights, which then need less averaging.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    pub warmup: LinearWarmup,
    /// The step at which the rate reaches 0 (the run's length).
    pub total_steps: u64,
}

impl WarmupCosine {
    /// The learning rate of update number `step` (1-based).
    #[must_use]
    pub fn lr_at(&self, step: u64) -> f64 {
        let warmup = self.warmup.warmup_steps;
        if step <= warmup || self.total_steps <= warmup {
            return self.warmup.lr_at(step);
        }
        let progress = ((step - warmup) as f64 / (self.total_steps - warmup) as f64).min(1.0);
        self.warmup.base_lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}
