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
