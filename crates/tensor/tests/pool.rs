//! The buffer pool hands out old buffers: an op that takes one for an output it
//! overwrites (`pool::for_overwrite`) must overwrite every element, and an op that
//! accumulates into one must get zeros. Here, right before each op's forward and
//! before its backward, the pool is filled with NaN buffers of the lengths the op
//! asks for; every result must come out bit for bit as without them.

use std::sync::{Mutex, PoisonError};
use tensor::{no_grad, rng, Addend, GroupNormSilu, Result, Tensor};

/// The tests count what the pool holds, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

type Op = fn(&Tensor<f64>, &[Tensor<f64>]) -> Result<Tensor<f64>>;

/// An op, its parameters, and the lengths of the buffers it takes from the pool.
type Case = (&'static str, Op, Vec<Tensor<f64>>, Vec<usize>);

/// Runs `op` forward and backward (upstream `g`), the pool full of NaN buffers
/// of length `lens` before each pass if `poison`; returns the output and the
/// gradients of `x` and of every parameter.
fn run(op: Op, x: &Tensor<f64>, params: &[Tensor<f64>], g: &Tensor<f64>, lens: &[usize], poison: bool) -> Result<Vec<Vec<f64>>> {
    let fill = || {
        if poison {
            for &len in lens {
                for _ in 0..16 {
                    tensor::pool::recycle(vec![f64::NAN; len]);
                }
            }
        }
    };
    let x = x.detach().requires_grad();
    let params: Vec<Tensor<f64>> = params.iter().map(|p| p.detach().requires_grad()).collect();
    fill();
    let y = op(&x, &params)?;
    fill();
    let grads = y.backward_with(g)?;
    let mut all = vec![y.to_vec(), grads.get(&x).expect("x took part").to_vec()];
    all.extend(params.iter().map(|p| grads.get(p).expect("took part").to_vec()));
    Ok(all)
}

#[test]
fn outputs_taken_from_the_pool_leak_nothing_of_its_old_values() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let mut r = rng(85);
    let x = Tensor::<f64>::randn(&[2, 8, 20, 20], &mut r);
    let w = Tensor::<f64>::randn(&[8, 8, 3, 3], &mut r);
    let (gamma, beta) = (Tensor::<f64>::randn(&[8], &mut r), Tensor::<f64>::randn(&[8], &mut r));
    let m = Tensor::<f64>::randn(&[20, 20], &mut r);
    // Keys and values for x as the queries of attention: 8 images, 2 channels, 400 positions.
    let kv = Tensor::<f64>::randn(&[8, 4, 400], &mut r);
    let image = 2 * 8 * 20 * 20;
    let cases: [Case; 6] = [
        ("conv2d", |x, p| x.conv2d(&p[0], None, 1, 1), vec![w], vec![image]),
        ("group_norm", |x, p| x.group_norm(4, &p[0], &p[1], 1e-5), vec![gamma.clone(), beta.clone()], vec![image]),
        ("group_norm_silu", |x, p| x.group_norm_silu(2, &p[0], &p[1], 1e-5), vec![gamma, beta], vec![image]),
        ("upsample_nearest2d", |x, _| x.upsample_nearest2d(2), vec![], vec![image, 4 * image]),
        ("matmul", |x, p| x.matmul(&p[0]), vec![m], vec![image]),
        (
            "attention",
            |x, p| Tensor::cat(&[x.reshape(&[8, 2, 400])?, p[0].clone()], 1)?.attention_qkv(),
            vec![kv],
            vec![image, 3 * image, 8 * 400 * 400],
        ),
    ];
    for (name, op, params, lens) in cases {
        let y_dims = op(&x, &params)?.dims().to_vec();
        let g = Tensor::<f64>::randn(&y_dims, &mut r);
        let clean = run(op, &x, &params, &g, &lens, false)?;
        let poisoned = run(op, &x, &params, &g, &lens, true)?;
        for (i, (a, b)) in clean.iter().zip(&poisoned).enumerate() {
            assert!(b.iter().all(|v| !v.is_nan()), "{name}: result {i} took NaN from a pooled buffer");
            assert!(a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: result {i} differs");
        }
    }
    assert!(tensor::pool::pooled_bytes() > 0);
    tensor::pool::release();
    assert_eq!(tensor::pool::pooled_bytes(), 0, "release frees every pooled buffer");
    Ok(())
}

/// Without a graph, `group_norm_silu_conv2d` keeps no intermediate tensor:
/// the normalised activations and the convolution's output before the
/// addition never exist whole, so after the op (its result alive) the pool,
/// emptied before, holds nothing. The separate ops leave both behind. Also
/// with parameters that require gradients, inside `no_grad`; at 14 x 14 and
/// 32 channels (the Winograd path, each intermediate 100 KiB, above the
/// pool's minimum); with no addend, a time embedding and a skip path.
#[test]
fn group_norm_silu_conv2d_without_a_graph_leaves_no_intermediate() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let mut r = rng(86);
    let x = Tensor::<f64>::randn(&[2, 32, 14, 14], &mut r);
    let (gamma, beta) = (Tensor::<f64>::randn(&[32], &mut r).requires_grad(), Tensor::<f64>::randn(&[32], &mut r).requires_grad());
    let (w, b) = (Tensor::<f64>::randn(&[32, 32, 3, 3], &mut r).mul_scalar(0.1).requires_grad(), Tensor::<f64>::randn(&[32], &mut r));
    let (shift, skip) = (Tensor::<f64>::randn(&[2, 32, 1, 1], &mut r), Tensor::<f64>::randn(&[2, 32, 14, 14], &mut r));
    let norm = GroupNormSilu { groups: 8, weight: &gamma, bias: &beta, eps: 1e-5 };
    for addend in [None, Some(Addend::Right(&shift)), Some(Addend::Left(&skip))] {
        let separate = || {
            let out = x.group_norm_silu(8, &gamma, &beta, 1e-5)?.conv2d(&w, Some(&b), 1, 1)?;
            match addend {
                None => Ok(out),
                Some(Addend::Left(a)) => a.add(&out),
                Some(Addend::Right(a)) => out.add(a),
            }
        };
        let want = no_grad(separate)?;
        assert!(tensor::pool::pooled_bytes() > 0, "the separate ops leave an intermediate behind ({addend:?})");
        tensor::pool::release();
        let fused = no_grad(|| x.group_norm_silu_conv2d(&norm, &w, Some(&b), (1, 1), addend))?;
        assert_eq!(tensor::pool::pooled_bytes(), 0, "nothing given back to the pool ({addend:?})");
        let bits = |t: &Tensor<f64>| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused), bits(&want), "{addend:?}");
        tensor::pool::release();
    }
    Ok(())
}
