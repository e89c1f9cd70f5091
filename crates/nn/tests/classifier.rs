//! The digit classifier (`ddpm eval`'s judge): its parameters are the layers its
//! module docs list, its features and logits have the documented shapes and do not
//! mix the samples of a batch, and it refuses images that are not `[B, 1, 28, 28]`.

use nn::{Classifier, Error, Module, Result};
use tensor::{no_grad, rng, Tensor};

#[test]
fn parameters_are_the_documented_layers_in_order() {
    let classifier = Classifier::<f32>::new(&mut rng(0));
    let mut seen = Vec::new();
    classifier.visit_params("", &mut |name, p| seen.push((name.to_string(), p.dims().to_vec())));
    let expected: Vec<(String, Vec<usize>)> = [
        ("conv.0.weight", vec![32, 1, 3, 3]),
        ("conv.0.bias", vec![32]),
        ("conv.1.weight", vec![64, 32, 3, 3]),
        ("conv.1.bias", vec![64]),
        ("conv.2.weight", vec![64, 64, 3, 3]),
        ("conv.2.bias", vec![64]),
        ("conv.3.weight", vec![64, 64, 3, 3]),
        ("conv.3.bias", vec![64]),
        ("features.weight", vec![128, 64 * 7 * 7]),
        ("features.bias", vec![128]),
        ("output.weight", vec![10, 128]),
        ("output.bias", vec![10]),
    ]
    .into_iter()
    .map(|(n, d)| (n.to_string(), d))
    .collect();
    assert_eq!(seen, expected);

    let mut classifier = classifier;
    let mut seen_mut = Vec::new();
    classifier.visit_params_mut("judge", &mut |name, _| seen_mut.push(name.to_string()));
    let prefixed: Vec<String> = expected.iter().map(|(n, _)| format!("judge.{n}")).collect();
    assert_eq!(seen_mut, prefixed);
}

#[test]
fn features_and_logits_have_the_documented_shapes_and_keep_samples_apart() -> Result<()> {
    let classifier = Classifier::<f32>::new(&mut rng(1));
    let batch = Tensor::<f32>::randn(&[3, 1, 28, 28], &mut rng(2));
    let (features, logits, alone) = no_grad(|| -> Result<_> {
        let second = batch.narrow(0, 1, 1)?;
        Ok((classifier.features(&batch)?, classifier.forward(&batch)?, classifier.features(&second)?))
    })?;
    assert_eq!(features.dims(), &[3, 128]);
    assert_eq!(logits.dims(), &[3, 10]);
    // The second sample's features do not depend on the samples beside it.
    let in_batch = &features.to_vec()[128..256];
    for (a, b) in in_batch.iter().zip(alone.to_vec()) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} in the batch, {b} alone");
    }
    // SiLU features are bounded below by min silu = -0.2785.
    assert!(features.to_vec().iter().all(|&v| v > -0.2785));
    Ok(())
}

#[test]
fn images_that_are_not_b_1_28_28_are_refused_by_name() {
    let classifier = Classifier::<f32>::new(&mut rng(0));
    for dims in [vec![2, 1, 28, 27], vec![2, 3, 28, 28], vec![1, 28, 28], vec![2, 1, 1, 28, 28]] {
        match classifier.forward(&Tensor::zeros(&dims)) {
            Err(Error::ShapeMismatch { op, msg }) => {
                assert_eq!(op, "Classifier::features");
                assert!(msg.contains(&format!("{dims:?}")), "{msg}");
            }
            other => panic!("{dims:?}: expected a ShapeMismatch, got {other:?}"),
        }
    }
}
