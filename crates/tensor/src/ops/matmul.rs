//! Batched matrix multiplication with broadcasting of the batch axes.
//!
//! Shapes: `a` is `[..., m, k]`, `b` is `[..., k, n]`, the output `[..., m, n]`,
//! the leading (batch) axes broadcast NumPy-style. Each batch item is one call of
//! the GEMM kernel on strided views, so transposed inputs are never copied.

use super::broadcast_strides;
use crate::element::Float;
use crate::error::{Error, Result};
use crate::kernels::gemm::{gemm, MatMut, MatRef};
use crate::layout::Layout;
use crate::op::Op;
use crate::shape::broadcast_shape;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// A strided matrix view of the last two axes of `t`, starting at `offset`.
fn mat_view<T: Float>(t: &Tensor<T>, offset: usize) -> MatRef<'_, T> {
    let r = t.rank();
    let (rows, cols) = (t.dims()[r - 2], t.dims()[r - 1]);
    let (rs, cs) = (t.layout().strides()[r - 2], t.layout().strides()[r - 1]);
    MatRef::new(&t.storage()[offset..], rows, cols, rs, cs).expect("a tensor's layout stays inside its storage")
}

/// The storage offset of every batch item of `t` broadcast to `batch`.
fn batch_offsets<T: Float>(t: &Tensor<T>, batch: &[usize]) -> Vec<usize> {
    let r = t.rank();
    let own = Layout::new(t.dims()[..r - 2].to_vec(), t.layout().strides()[..r - 2].to_vec(), t.layout().offset());
    let strides = broadcast_strides(&own, batch);
    Layout::new(batch.to_vec(), strides, t.layout().offset()).storage_indices()
}

impl<T: Float> Tensor<T> {
    /// `a @ b` over the last two axes, batch axes broadcast.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let b = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2])?;
    /// assert_eq!(a.matmul(&b)?.to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
    /// # Ok::<(), tensor::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when a rank is below 2 or the inner sizes differ,
    /// [`Error::Broadcast`] when the batch axes do not broadcast.
    pub fn matmul(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        let (a, b) = (self, rhs);
        if a.rank() < 2 || b.rank() < 2 || a.dims()[a.rank() - 1] != b.dims()[b.rank() - 2] {
            return Err(Error::ShapeMismatch {
                op: "matmul",
                msg: format!("cannot multiply {} by {}", fmt_dims(a.dims()), fmt_dims(b.dims())),
            });
        }
        let (m, k, n) = (a.dims()[a.rank() - 2], a.dims()[a.rank() - 1], b.dims()[b.rank() - 1]);
        let batch = broadcast_shape("matmul", &a.dims()[..a.rank() - 2], &b.dims()[..b.rank() - 2])?;
        let (offsets_a, offsets_b) = (batch_offsets(a, &batch), batch_offsets(b, &batch));
        let mut out = crate::pool::for_overwrite(offsets_a.len() * m * n);
        let one_item = |i: usize, c: &mut [T]| {
            let c = MatMut::new(c, m, n, n, 1).expect("output buffer sized m * n");
            gemm(T::ONE, mat_view(a, offsets_a[i]), mat_view(b, offsets_b[i]), T::ZERO, c);
        };
        if m * n > 0 {
            if offsets_a.len() > 1 && m * n * k < (1 << 18) {
                // Many small products (attention): parallel over the batch.
                out.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| one_item(i, c));
            } else {
                // Few large products: the GEMM parallelises each one.
                out.chunks_mut(m * n).enumerate().for_each(|(i, c)| one_item(i, c));
            }
        }
        let mut dims = batch;
        dims.extend([m, n]);
        Ok(Tensor::from_op(out, &dims, Op::Matmul(a.clone(), b.clone())))
    }

    /// `x @ w^T + b`, the affine map of a linear layer (composed).
    /// Shapes: `x` `[N, in]`, `weight` `[out, in]`, `bias` `[out]`.
    ///
    /// # Errors
    /// As [`Tensor::matmul`] and [`Tensor::add`].
    pub fn linear(&self, weight: &Tensor<T>, bias: Option<&Tensor<T>>) -> Result<Tensor<T>> {
        let y = self.matmul(&weight.t()?)?;
        match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }
}

fn fmt_dims(dims: &[usize]) -> String {
    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

// C = A B: dL/dA = G B^T, dL/dB = A^T G (summed over broadcast batch axes).
// The transposes are strided views; the GEMM reads them without copying.
pub(crate) fn matmul_backward<T: Float>(a: &Tensor<T>, b: &Tensor<T>, g: &Tensor<T>) -> Result<(Tensor<T>, Tensor<T>)> {
    let ga = g.matmul(&b.t()?)?.sum_to_shape(a.dims())?;
    let gb = a.t()?.matmul(g)?.sum_to_shape(b.dims())?;
    Ok((ga, gb))
}
