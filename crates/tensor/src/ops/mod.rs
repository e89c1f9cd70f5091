//! The ops, one file per family; each primitive's forward sits next to its backward.
//!
//! This file holds the loops they share: an elementwise map, and a broadcasting zip
//! that walks two strided inputs in the output's row-major order. Large inputs are
//! split across threads in fixed-size chunks, so results never depend on the
//! thread count.

pub mod binary;
pub mod conv;
pub mod matmul;
pub mod norm;
pub mod reduce;
pub mod select;
pub mod softmax;
pub mod unary;
pub mod upsample;
pub mod view;

use crate::element::Float;
use crate::kernels::elementwise::{map_to_vec, rows_to_vec, zip_to_vec};
use crate::layout::Layout;
use crate::shape::elem_count;

/// Below this many elements an elementwise loop runs on one thread: spawning
/// rayon tasks costs more than the work.
pub(crate) const PARALLEL_MIN_ELEMS: usize = 1 << 15;
/// Elements per rayon task of an elementwise loop.
const CHUNK: usize = 1 << 13;

/// `out[i] = f(x[i])`.
pub(crate) fn map<T: Float>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    map_to_vec(x, CHUNK, x.len() >= PARALLEL_MIN_ELEMS, f)
}

/// `out[i] = f(a[i], b[i])` for two slices of the same length.
pub(crate) fn zip_map<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    zip_to_vec(a, b, CHUNK, a.len() >= PARALLEL_MIN_ELEMS, f)
}

/// The strides that read `layout` broadcast to `out_dims` (0 on repeated axes).
/// The caller has checked that the shapes broadcast.
pub(crate) fn broadcast_strides(layout: &Layout, out_dims: &[usize]) -> Vec<usize> {
    let rank = out_dims.len();
    let lead = rank - layout.dims().len();
    (0..rank).map(|i| if i < lead || layout.dims()[i - lead] == 1 { 0 } else { layout.strides()[i - lead] }).collect()
}

/// Merges neighbouring axes that every stride list walks as one (stride of the
/// outer = stride of the inner times its size), so broadcasting a `[C, 1, 1]` bias
/// over `[N, C, H, W]` becomes a loop over `[N*C, H*W]`.
fn coalesce(dims: &[usize], strides: &mut [Vec<usize>]) -> Vec<usize> {
    let mut out_dims: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for (axis, &d) in dims.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let mergeable = !out_dims.is_empty() && strides.iter().zip(&out_strides).all(|(s, os)| *os.last().unwrap() == s[axis] * d);
        if mergeable {
            *out_dims.last_mut().unwrap() *= d;
            for (s, os) in strides.iter().zip(out_strides.iter_mut()) {
                *os.last_mut().unwrap() = s[axis];
            }
        } else {
            out_dims.push(d);
            for (s, os) in strides.iter().zip(out_strides.iter_mut()) {
                os.push(s[axis]);
            }
        }
    }
    for (s, os) in strides.iter_mut().zip(out_strides) {
        *s = os;
    }
    out_dims
}

/// `out[i] = f(a[ia(i)], b[ib(i)])` over `out_dims` in row-major order, where
/// `a` and `b` are read through their (broadcast) strides and offsets.
pub(crate) fn zip_strided<T: Float>(
    out_dims: &[usize],
    (a, a_offset, a_strides): (&[T], usize, Vec<usize>),
    (b, b_offset, b_strides): (&[T], usize, Vec<usize>),
    f: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    let n = elem_count(out_dims);
    let mut strides = [a_strides, b_strides];
    let dims = coalesce(out_dims, &mut strides);
    let [sa, sb] = strides;
    if n == 0 {
        return Vec::new();
    }
    if dims.is_empty() {
        return vec![f(a[a_offset], b[b_offset])];
    }
    let rank = dims.len();
    let inner = dims[rank - 1];
    let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
    // Start offsets of output row `row` (all indices but the innermost).
    let row_start = |row: usize| {
        let (mut oa, mut ob, mut rest) = (a_offset, b_offset, row);
        for axis in (0..rank - 1).rev() {
            let i = rest % dims[axis];
            rest /= dims[axis];
            oa += i * sa[axis];
            ob += i * sb[axis];
        }
        (oa, ob)
    };
    let f = &f;
    let row = |row: usize| {
        let (pa, pb) = row_start(row);
        (0..inner).map(move |i| f(a[pa + i * ia], b[pb + i * ib]))
    };
    rows_to_vec(n / inner, inner, n >= PARALLEL_MIN_ELEMS, row)
}
