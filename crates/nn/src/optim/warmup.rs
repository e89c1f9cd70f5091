//! Linear learning-rate warmup: the rate grows linearly to its base value over
//! the first `warmup_steps` updates, then stays there (DDPM: 5000 steps).

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
