//! The ops, one file per family; each primitive's forward sits next to its backward.
//!
//! This file holds the loops they share: an elementwise map, and a broadcasting zip
//! that walks two strided inputs in the output's row-major order. Large inputs are
//! split across threads in fixed-size chunks, so results never depend on the
//! thread count.

pub mod attention;
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
use crate::kernels::elementwise::{map_to_vec, rows_to_vec, zip_assign, zip_to_vec};
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

/// `acc[i] += b[i]` in place (gradient accumulation).
pub(crate) fn add_assign<T: Float>(acc: &mut [T], b: &[T]) {
    zip_assign(acc, b, CHUNK, acc.len() >= PARALLEL_MIN_ELEMS, |x, y| x + y);
}

/// `acc[i] += b[i]` on this thread: one run of a larger sum that the caller
/// splits between the threads.
pub(crate) fn add_run<T: Float>(acc: &mut [T], b: &[T]) {
    zip_assign(acc, b, CHUNK, false, |x, y| x + y);
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
/// over `[N, C, H, W]` becomes a loop over `[N, C, H*W]`, and two contiguous
/// tensors of the same shape one loop over all their elements.
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
    let (rows, parallel) = (n / inner, n >= PARALLEL_MIN_ELEMS);
    // The innermost axis read as plain slices where it can be, so the loop
    // vectorises: a row of `a` against a row of `b`, or against one number of
    // `b` repeated (a bias over a channel's pixels), or the other way round.
    match (ia, ib) {
        (1, 1) => rows_to_vec(rows, inner, parallel, |row| {
            let (pa, pb) = row_start(row);
            a[pa..pa + inner].iter().zip(&b[pb..pb + inner]).map(move |(&x, &y)| f(x, y))
        }),
        (1, 0) => rows_to_vec(rows, inner, parallel, |row| {
            let (pa, pb) = row_start(row);
            let y = b[pb];
            a[pa..pa + inner].iter().map(move |&x| f(x, y))
        }),
        (0, 1) => rows_to_vec(rows, inner, parallel, |row| {
            let (pa, pb) = row_start(row);
            let x = a[pa];
            b[pb..pb + inner].iter().map(move |&y| f(x, y))
        }),
        _ => rows_to_vec(rows, inner, parallel, |row| {
            let (pa, pb) = row_start(row);
            (0..inner).map(move |i| f(a[pa + i * ia], b[pb + i * ib]))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::coalesce;
    use crate::tensor::Tensor;

    /// Axes merge only when every stride list walks them as one: the outer
    /// axis's stride is the inner one's times the inner size. Size-1 axes
    /// drop out.
    #[test]
    fn coalesce_merges_only_axes_walked_as_one() {
        // (dims, the two stride lists) -> (merged dims, merged stride lists)
        type Case<'a> = (&'a [usize], [&'a [usize]; 2], &'a [usize], [&'a [usize]; 2]);
        let cases: [Case; 6] = [
            // Two contiguous tensors: one loop.
            (&[2, 3, 4], [&[12, 4, 1], &[12, 4, 1]], &[24], [&[1], &[1]]),
            // A [C, 1, 1] bias over [N, C, H, W]: H and W merge, C stays.
            (&[2, 3, 4, 5], [&[60, 20, 5, 1], &[0, 1, 0, 0]], &[2, 3, 20], [&[60, 20, 1], &[0, 1, 0]]),
            // A [C, 1] bias over [N, C, W]: nothing merges.
            (&[2, 3, 4], [&[12, 4, 1], &[0, 1, 0]], &[2, 3, 4], [&[12, 4, 1], &[0, 1, 0]]),
            // Rows of 3 at a stride of 4 (a narrowed view): a gap, no merge.
            (&[2, 3], [&[4, 1], &[3, 1]], &[2, 3], [&[4, 1], &[3, 1]]),
            // A permuted view: the outer axis steps by half the inner's stride.
            (&[2, 2], [&[4, 8], &[2, 1]], &[2, 2], [&[4, 8], &[2, 1]]),
            // Size-1 axes drop out before merging.
            (&[1, 3, 1, 2], [&[6, 2, 2, 1], &[6, 2, 2, 1]], &[6], [&[1], &[1]]),
        ];
        for (dims, strides, want_dims, want_strides) in cases {
            let mut got = strides.map(<[usize]>::to_vec);
            let got_dims = coalesce(dims, &mut got);
            assert_eq!((got_dims.as_slice(), got), (want_dims, want_strides.map(<[usize]>::to_vec)), "{dims:?} {strides:?}");
        }
    }

    /// `a - b` (not commutative, so a swapped operand shows) with NumPy
    /// broadcasting, element by element from the output's index.
    fn sub_by_index(a: &Tensor<f64>, b: &Tensor<f64>, dims: &[usize]) -> Vec<f64> {
        let (va, vb) = (a.to_vec(), b.to_vec());
        let at = |t: &Tensor<f64>, v: &[f64], index: &[usize]| {
            let lead = dims.len() - t.rank();
            let flat = t.dims().iter().enumerate().fold(0, |flat, (axis, &d)| flat * d + if d == 1 { 0 } else { index[lead + axis] });
            v[flat]
        };
        let n: usize = dims.iter().product();
        (0..n)
            .map(|mut flat| {
                let mut index = vec![0; dims.len()];
                for axis in (0..dims.len()).rev() {
                    index[axis] = flat % dims[axis];
                    flat /= dims[axis];
                }
                at(a, &va, &index) - at(b, &vb, &index)
            })
            .collect()
    }

    /// Every shape of innermost loop of the broadcasting zip: both rows read
    /// in place, one operand's number repeated along the row (either side),
    /// and strided rows (a transposed view), on odd sizes, against the
    /// element-by-element definition.
    #[test]
    fn broadcast_rows_of_every_stride_pattern_match_the_definition() {
        let tensor = |dims: &[usize], seed: f64| {
            let n: usize = dims.iter().product();
            Tensor::from_vec((0..n).map(|i| (i as f64 * 0.731 + seed).sin()).collect(), dims).unwrap()
        };
        let cases: [(&[usize], &[usize]); 6] = [
            (&[3, 5, 7], &[5, 7]),    // rows against rows, repeated over the first axis
            (&[3, 5, 7], &[3, 5, 1]), // a row against one number of b
            (&[3, 5, 1], &[3, 5, 7]), // one number of a against a row
            (&[2, 3, 5, 7], &[1, 3, 1, 1]),
            (&[7], &[1]),
            (&[1], &[9]),
        ];
        for (da, db) in cases {
            let (a, b) = (tensor(da, 0.1), tensor(db, 0.7));
            let out = a.sub(&b).unwrap();
            assert_eq!(out.to_vec(), sub_by_index(&a, &b, out.dims()), "{da:?} - {db:?}");
        }
        // Strided rows: a transposed view against a column, and against a row.
        let a = tensor(&[7, 5], 0.3).t().unwrap();
        for b in [tensor(&[5, 1], 0.9), tensor(&[7], 0.9), tensor(&[5, 7], 0.9).t().unwrap().t().unwrap()] {
            let out = a.sub(&b).unwrap();
            let a_stored = Tensor::from_vec(a.to_vec(), a.dims()).unwrap();
            let b_stored = Tensor::from_vec(b.to_vec(), b.dims()).unwrap();
            assert_eq!(out.to_vec(), sub_by_index(&a_stored, &b_stored, out.dims()), "{:?} - {:?}", a.dims(), b.dims());
        }
    }
}
