//! Bad input returns an error that names the op and the shapes; nothing panics.

use tensor::{Error, Tensor};

fn zeros(dims: &[usize]) -> Tensor<f32> {
    Tensor::zeros(dims)
}

#[test]
fn matmul_of_mismatched_inner_sizes() {
    let err = zeros(&[3, 4]).matmul(&zeros(&[5, 6])).unwrap_err();
    assert_eq!(err.to_string(), "matmul: shape mismatch: cannot multiply 3x4 by 5x6");
}

#[test]
fn matmul_of_a_vector_on_either_side() {
    // The inner sizes agree (3 and 3); the rank alone is wrong.
    let err = zeros(&[3]).matmul(&zeros(&[3, 4])).unwrap_err();
    assert_eq!(err.to_string(), "matmul: shape mismatch: cannot multiply 3 by 3x4");
    assert!(matches!(zeros(&[2, 3]).matmul(&zeros(&[3])), Err(Error::ShapeMismatch { op: "matmul", .. })));
}

#[test]
fn matmul_of_unbroadcastable_batches() {
    let err = zeros(&[2, 3, 4]).matmul(&zeros(&[3, 4, 5])).unwrap_err();
    assert_eq!(err, Error::Broadcast { op: "matmul", lhs: vec![2], rhs: vec![3] });
}

#[test]
fn broadcast_of_incompatible_shapes() {
    let err = zeros(&[2, 3]).add(&zeros(&[4])).unwrap_err();
    assert_eq!(err.to_string(), "add: cannot broadcast shape [2, 3] with shape [4]");
}

#[test]
fn conv_with_wrong_channel_count() {
    let err = zeros(&[1, 3, 8, 8]).conv2d(&zeros(&[4, 2, 3, 3]), None, 1, 1).unwrap_err();
    assert_eq!(err.to_string(), "conv2d: shape mismatch: x [1, 3, 8, 8] has 3 channels but weight [4, 2, 3, 3] expects 2");
}

#[test]
fn conv_with_zero_stride_or_oversized_kernel() {
    assert!(zeros(&[1, 1, 4, 4]).conv2d(&zeros(&[1, 1, 3, 3]), None, 0, 0).unwrap_err().to_string().contains("stride"));
    let err = zeros(&[1, 1, 2, 2]).conv2d(&zeros(&[1, 1, 5, 5]), None, 1, 0).unwrap_err();
    assert!(err.to_string().starts_with("conv2d:"), "{err}");
}

#[test]
fn conv_kernel_checked_against_each_padded_side() {
    // One side too small is enough to refuse, whichever side it is.
    let err = zeros(&[1, 1, 8, 2]).conv2d(&zeros(&[1, 1, 3, 3]), None, 1, 0).unwrap_err();
    assert_eq!(err.to_string(), "conv2d: shape mismatch: kernel 3x3 larger than the padded input 8x2");
    let err = zeros(&[1, 1, 2, 8]).conv2d(&zeros(&[1, 1, 3, 3]), None, 1, 0).unwrap_err();
    assert_eq!(err.to_string(), "conv2d: shape mismatch: kernel 3x3 larger than the padded input 2x8");
    // The padding counts twice: 3 + 2 * 0 < 5 is refused, 1 + 2 * 1 = 3 is not.
    assert!(zeros(&[1, 1, 3, 3]).conv2d(&zeros(&[1, 1, 5, 5]), None, 1, 0).is_err());
    assert_eq!(zeros(&[1, 1, 1, 1]).conv2d(&zeros(&[1, 1, 3, 3]), None, 1, 1).unwrap().dims(), [1, 1, 1, 1]);
    // A kernel exactly the size of the padded input fits once.
    assert_eq!(zeros(&[1, 1, 3, 4]).conv2d(&zeros(&[2, 1, 3, 4]), None, 1, 0).unwrap().dims(), [1, 2, 1, 1]);
    assert_eq!(zeros(&[1, 1, 2, 3]).conv2d(&zeros(&[1, 1, 4, 5]), None, 1, 1).unwrap().dims(), [1, 1, 1, 1]);
}

#[test]
fn conv_of_a_wrong_rank_on_either_side() {
    let err = zeros(&[1, 4, 4]).conv2d(&zeros(&[1, 1, 3, 3]), None, 1, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d: shape mismatch: needs x [N, C, H, W] and weight [K, C, kh, kw], got x [1, 4, 4] and weight [1, 1, 3, 3]"
    );
    assert!(zeros(&[1, 1, 4, 4]).conv2d(&zeros(&[1, 3, 3]), None, 1, 1).is_err());
}

#[test]
fn attention_of_unequal_or_wrong_rank_inputs() {
    let (q, v) = (zeros(&[1, 2, 3]), zeros(&[1, 2, 4]));
    let err = tensor::attention(&q, &q, &v).unwrap_err();
    assert_eq!(err.to_string(), "attention: shape mismatch: q [1, 2, 3], k [1, 2, 3], v [1, 2, 4] must all be [B, C, L]");
    // Each condition on its own, and the message names the three shapes (not the
    // concatenation or the product that would fail after a check let them through).
    let err = tensor::attention(&q, &v, &q).unwrap_err();
    assert_eq!(err.to_string(), "attention: shape mismatch: q [1, 2, 3], k [1, 2, 4], v [1, 2, 3] must all be [B, C, L]");
    let flat = zeros(&[2, 3]);
    let err = tensor::attention(&flat, &flat, &flat).unwrap_err();
    assert_eq!(err.to_string(), "attention: shape mismatch: q [2, 3], k [2, 3], v [2, 3] must all be [B, C, L]");
    for (a, b, c) in [(&q, &q, &v), (&q, &v, &q), (&flat, &flat, &flat)] {
        let err = tensor::attention_composed(a, b, c).unwrap_err().to_string();
        assert!(err.starts_with("attention: ") && err.ends_with("must all be [B, C, L]"), "{err}");
    }
    // The stacked form: rank 3 and a channel count that splits in three.
    let err = zeros(&[1, 4, 3]).attention_qkv().unwrap_err();
    assert_eq!(
        err.to_string(),
        "attention: shape mismatch: qkv [1, 4, 3] must be [B, 3C, L]: queries, keys and values stacked along axis 1"
    );
    assert!(zeros(&[6, 3]).attention_qkv().is_err() && zeros(&[1, 6, 3]).attention_qkv().is_ok());
}

#[test]
fn cross_entropy_of_a_wrong_label_count_or_rank() {
    let err = zeros(&[2, 3]).cross_entropy(&[0]).unwrap_err();
    assert_eq!(err.to_string(), "cross_entropy: shape mismatch: logits [2, 3] with 1 labels; expected [N, classes] and N labels");
    assert!(matches!(zeros(&[2, 3, 1]).cross_entropy(&[0, 1]), Err(Error::ShapeMismatch { op: "cross_entropy", .. })));
}

#[test]
fn reshape_to_a_different_element_count() {
    let err = zeros(&[2, 3]).reshape(&[4, 2]).unwrap_err();
    assert_eq!(err.to_string(), "reshape: shape [2, 3] has 6 elements but [4, 2] needs 8");
}

#[test]
fn axis_out_of_range() {
    let err = zeros(&[2, 3]).sum(&[2], false).unwrap_err();
    assert_eq!(err.to_string(), "sum: axis 2 is out of range for a tensor of rank 2");
    assert!(matches!(zeros(&[2]).softmax(1), Err(Error::AxisOutOfRange { axis: 1, rank: 1, .. })));
    assert!(matches!(zeros(&[2, 2]).narrow(0, 1, 2), Err(Error::InvalidArgument { op: "narrow", .. })));
}

#[test]
fn other_bad_arguments() {
    assert!(Tensor::<f32>::from_vec(vec![1.0; 5], &[2, 3]).is_err());
    assert!(zeros(&[2, 3]).permute(&[0, 0]).is_err());
    assert!(zeros(&[1, 6, 2, 2]).group_norm(4, &zeros(&[6]), &zeros(&[6]), 1e-5).is_err());
    assert!(zeros(&[2, 3]).mse_loss(&zeros(&[3])).is_err());
    assert!(zeros(&[2, 3]).index_select(1, &[3]).is_err());
    assert!(zeros(&[2, 3]).cross_entropy(&[0]).is_err());
    assert!(Tensor::<f32>::cat(&[], 0).is_err());
    assert!(zeros(&[2, 3]).backward().is_err());
}

#[test]
fn max_and_argmax_of_an_empty_axis() {
    let err = zeros(&[2, 0]).max(&[1], false).unwrap_err();
    assert_eq!(err.to_string(), "max: reducing an empty axis of [2, 0]");
    assert!(matches!(zeros(&[0, 3]).argmax(0), Err(Error::InvalidArgument { op: "argmax", .. })));
    assert!(matches!(zeros(&[2, 3]).argmax(2), Err(Error::AxisOutOfRange { op: "argmax", axis: 2, rank: 2 })));
}

#[test]
fn gather_of_a_wrong_index_shape_or_value() {
    let x = zeros(&[3, 4]);
    // The index's rank, its value count, and its size off the gathered axis.
    let err = x.gather(1, &[0; 6], &[6]).unwrap_err();
    assert_eq!(err.to_string(), "gather: shape mismatch: index of shape [6] (6 values) for x [3, 4] along axis 1");
    assert!(matches!(x.gather(1, &[0; 5], &[3, 2]), Err(Error::ShapeMismatch { op: "gather", .. })));
    assert!(matches!(x.gather(1, &[0; 4], &[2, 2]), Err(Error::ShapeMismatch { op: "gather", .. })));
    // Any size along the axis itself is fine; an index past its end is not.
    assert_eq!(x.gather(1, &[3; 9], &[3, 3]).unwrap().dims(), [3, 3]);
    let err = x.gather(1, &[0, 1, 4], &[3, 1]).unwrap_err();
    assert_eq!(err.to_string(), "gather: index 4 out of range for axis 1 of [3, 4]");
}

#[test]
fn views_of_a_wrong_axis_or_shape() {
    let err = zeros(&[2, 3]).squeeze(1).unwrap_err();
    assert_eq!(err.to_string(), "squeeze: axis 1 of [2, 3] has size 3, not 1");
    assert!(matches!(zeros(&[2, 3]).unsqueeze(3), Err(Error::AxisOutOfRange { op: "unsqueeze", axis: 3, rank: 3 })));
    // An axis past the rank, a repeated axis, and too few axes are not permutations.
    for perm in [&[0, 2][..], &[1, 1], &[1]] {
        let err = zeros(&[2, 3]).permute(perm).unwrap_err();
        assert_eq!(err.to_string(), format!("permute: {perm:?} is not a permutation of the axes of [2, 3]"));
    }
    assert!(matches!(zeros(&[3]).t(), Err(Error::InvalidArgument { op: "t", .. })));
    assert!(matches!(zeros(&[2, 3]).transpose(0, 2), Err(Error::AxisOutOfRange { op: "transpose", .. })));
    assert!(matches!(zeros(&[3]).broadcast_to(&[1]), Err(Error::Broadcast { op: "broadcast_to", .. })));
}

#[test]
fn cat_of_disagreeing_shapes() {
    let err = Tensor::cat(&[zeros(&[2, 3]), zeros(&[3, 4])], 0).unwrap_err();
    assert_eq!(err.to_string(), "cat: shape mismatch: [2, 3] and [3, 4] differ outside axis 0");
    // The same sizes as far as they go, but a different rank.
    assert!(matches!(Tensor::cat(&[zeros(&[2, 3]), zeros(&[2, 3, 1])], 0), Err(Error::ShapeMismatch { op: "cat", .. })));
}

#[test]
fn group_norm_of_a_wrong_rank_group_count_or_parameter() {
    let (w, b) = (zeros(&[6]), zeros(&[6]));
    let err = zeros(&[6]).group_norm(3, &w, &b, 1e-5).unwrap_err();
    assert_eq!(err.to_string(), "group_norm: shape mismatch: x needs shape [N, C, ...], got [6]");
    let err = zeros(&[2, 6]).group_norm(0, &w, &b, 1e-5).unwrap_err();
    assert_eq!(err.to_string(), "group_norm: 6 channels do not split into 0 groups");
    // A wrong weight or a wrong bias, each alone.
    let err = zeros(&[2, 6, 3]).group_norm(3, &zeros(&[5]), &b, 1e-5).unwrap_err();
    assert_eq!(err.to_string(), "group_norm: shape mismatch: weight [5] and bias [6] should both be [6] for x [2, 6, 3]");
    assert!(matches!(zeros(&[2, 6, 3]).group_norm_silu(3, &w, &zeros(&[5]), 1e-5), Err(Error::ShapeMismatch { op: "group_norm", .. })));
}
