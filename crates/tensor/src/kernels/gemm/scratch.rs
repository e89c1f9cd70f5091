//! Per-thread scratch buffers (the packed panels A~ and B~, conv's im2col
//! columns), kept between calls so a steady training loop never allocates.
//!
//! Each thread owns a small pool of `Vec`s. A caller *takes* a buffer out of
//! the pool and puts it back when done, instead of borrowing a single
//! thread-local buffer: a rayon thread that waits inside `join` may run
//! another task meanwhile (say, the GEMM of another image of a batch), and
//! that task then simply takes a second buffer.

use super::GemmScalar;

/// Alignment of the slices handed out: one cache line, which is also the
/// width of an AVX-512 register.
pub(crate) const ALIGN_BYTES: usize = 64;

/// Buffers kept per thread and element type; more are freed on return.
const POOL_CAPACITY: usize = 8;

/// Runs `f` on a scratch slice of `len` elements whose start is 64-byte
/// aligned. The contents are whatever the previous user left: `f` must write
/// before it reads.
pub(crate) fn with_scratch<T: GemmScalar, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let mut buf = T::scratch_pool().with(|pool| pool.borrow_mut().pop()).unwrap_or_default();
    let extra = ALIGN_BYTES / std::mem::size_of::<T>();
    if buf.len() < len + extra {
        // Grow only; the new tail is zeroed once, later calls reuse it as is.
        buf.resize(len + extra, T::ZERO);
    }
    // `align_offset` may decline (usize::MAX); then run unaligned, which only
    // costs speed: the kernels use unaligned loads.
    let offset = match buf.as_ptr().align_offset(ALIGN_BYTES) {
        off if off <= extra => off,
        _ => 0,
    };
    let result = f(&mut buf[offset..offset + len]);
    T::scratch_pool().with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_CAPACITY {
            pool.push(buf);
        }
    });
    result
}
