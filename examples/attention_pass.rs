//! Times the self-attention of one UNet block at 7x7 (batch 64, 49
//! positions), fused (`Tensor::attention_qkv`) and composed from primitives
//! (`attention_composed` on three narrows, what the block ran before):
//! `cargo run --release --example attention_pass [channels] [passes]
//! [fused|composed] [grad|nograd]` (32, 30, fused, grad). Prints the median
//! time of the forward and of the forward with its backward.

use std::time::Instant;
use tensor::{attention_composed, no_grad, rng, Tensor};

fn main() -> Result<(), tensor::Error> {
    // As `ddpm` does: the main thread is one of rayon's workers, and the
    // others busy-wait between ops.
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().build_global();
    let _awake = tensor::KeepAwake::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (c, passes, (b, l)) = (number(0, 32), number(1, 30).max(1), (64, 49));
    let composed = args.get(2).is_some_and(|a| a == "composed");
    let grad = args.get(3).is_none_or(|a| a != "nograd");
    let mut r = rng(0);
    let qkv = Tensor::<f32>::randn(&[b, 3 * c, l], &mut r).requires_grad();
    let upstream = Tensor::<f32>::randn(&[b, c, l], &mut r);
    let forward = || {
        if composed {
            let (q, k, v) = (qkv.narrow(1, 0, c)?, qkv.narrow(1, c, c)?, qkv.narrow(1, 2 * c, c)?);
            attention_composed(&q, &k, &v)
        } else {
            qkv.attention_qkv()
        }
    };
    let (mut forward_ms, mut total_ms) = (Vec::new(), Vec::new());
    for _ in 0..passes {
        let start = Instant::now();
        let out = if grad { forward()? } else { no_grad(forward)? };
        forward_ms.push(start.elapsed().as_secs_f64() * 1e3);
        if grad {
            let grads = out.backward_with(&upstream)?;
            assert!(grads.get(&qkv).is_some());
        }
        total_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (what, mode) = (if composed { "composed" } else { "fused" }, if grad { "with a graph" } else { "no graph" });
    println!(
        "{what}, {mode}: B {b} C {c} L {l}: forward {:.3} ms, forward + backward {:.3} ms (medians)",
        median(forward_ms),
        median(total_ms)
    );
    Ok(())
}
