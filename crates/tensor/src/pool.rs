//! Tensor buffers reused from one training step to the next.
//!
//! A training step allocates the same few hundred buffers every time (each
//! activation, each gradient), and frees them all when the step's graph is
//! dropped. Handed back to the allocator, a large buffer goes back to the
//! operating system, and the next step's buffer of the same size comes back as
//! untouched pages: the first write to each 4 KiB page is a page fault, 57,888
//! of them per course-UNet step (batch 64, AMD EPYC), the kernel zeroing pages
//! that are about to be overwritten. With the pool: about 50.
//!
//! So when the last tensor holding a buffer drops it, the buffer goes into this
//! pool, kept by its element type and capacity, and the ops that build a tensor
//! of that many elements take it from here ([`with_capacity`], [`zeroed`]). The
//! shapes of a step repeat, so after the first step nearly every buffer is a
//! reused one. Only buffers of at least [`MIN_BYTES`] are kept (smaller ones are
//! served by the allocator's own free lists without faults), and at most
//! [`MAX_BYTES`] in all: a buffer beyond that is freed as before.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

/// Smaller buffers are not kept: 32 KiB.
pub const MIN_BYTES: usize = 32 << 10;

/// The most the pool keeps, in bytes: 2 GiB.
pub const MAX_BYTES: usize = 2 << 30;

#[derive(Default)]
struct Pool {
    /// Free buffers by (element type, capacity). Each is a `Vec<T>` of that type.
    free: HashMap<(TypeId, usize), Vec<Box<dyn Any + Send>>>,
    /// Bytes held in `free`.
    bytes: usize,
}

static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(|| Mutex::new(Pool::default()));

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // A panic while the lock was held leaves the pool consistent (every update
    // is a single push or pop), so a poisoned lock is still usable.
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A pooled buffer of capacity `len`, as it was given back (its old values
/// still in it), if there is one.
fn take<T: Copy + Send + 'static>(len: usize) -> Option<Vec<T>> {
    let bytes = len * std::mem::size_of::<T>();
    if bytes < MIN_BYTES {
        return None;
    }
    let mut pool = pool();
    let buffer = pool.free.get_mut(&(TypeId::of::<T>(), len)).and_then(Vec::pop)?;
    pool.bytes -= bytes;
    drop(pool);
    buffer.downcast::<Vec<T>>().ok().map(|buffer| *buffer)
}

/// An empty vector with room for `len` elements: a pooled buffer of exactly
/// that capacity if there is one, else a new allocation.
#[must_use]
pub fn with_capacity<T: Copy + Send + 'static>(len: usize) -> Vec<T> {
    match take(len) {
        Some(mut buffer) => {
            buffer.clear();
            buffer
        }
        None => Vec::with_capacity(len),
    }
}

/// `len` zeros, in a pooled buffer when there is one (see [`with_capacity`]).
#[must_use]
pub fn zeroed<T: Copy + Send + Default + 'static>(len: usize) -> Vec<T> {
    let mut out = with_capacity(len);
    out.resize(len, T::default());
    out
}

/// `len` elements for a caller that overwrites every one of them: a pooled
/// buffer with the values it held (no pass over memory to zero it), or zeros.
/// For the outputs of kernels that write their whole output (GEMM with
/// `beta = 0`, the convolution passes, the norms); each such kernel is tested
/// to leak nothing of a NaN-filled output buffer.
#[must_use]
pub fn for_overwrite<T: Copy + Send + Default + 'static>(len: usize) -> Vec<T> {
    match take(len) {
        Some(mut buffer) => {
            buffer.resize(len, T::default());
            buffer
        }
        None => vec![T::default(); len],
    }
}

/// Gives a buffer back for reuse (or frees it: too small, or the pool is full).
pub fn recycle<T: Copy + Send + 'static>(buffer: Vec<T>) {
    let bytes = buffer.capacity() * std::mem::size_of::<T>();
    if bytes < MIN_BYTES {
        return;
    }
    let mut pool = pool();
    if pool.bytes + bytes > MAX_BYTES {
        return;
    }
    pool.bytes += bytes;
    pool.free.entry((TypeId::of::<T>(), buffer.capacity())).or_default().push(Box::new(buffer));
}

/// Frees every pooled buffer: for a program that moves on to tensors of other
/// shapes (`ddpm bench` between two models), so the old ones do not sit in memory.
pub fn release() {
    let mut pool = pool();
    pool.free.clear();
    pool.bytes = 0;
}

/// Bytes the pool holds now.
#[must_use]
pub fn pooled_bytes() -> usize {
    pool().bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_buffer_is_reused_for_the_same_length_and_type_only() {
        // A length no other test in this binary uses, so parallel tests do not take it.
        let len = MIN_BYTES / 4 + 12_345;
        let buffer: Vec<f32> = vec![7.0; len];
        let address = buffer.as_ptr() as usize;
        recycle(buffer);
        // Another type, or another length, does not get it.
        let other_type: Vec<u32> = with_capacity(len);
        assert_ne!(other_type.as_ptr() as usize, address);
        let other_len: Vec<f32> = with_capacity(len + 1);
        assert_ne!(other_len.as_ptr() as usize, address);
        // The same type and length do, empty, or zeroed.
        let reused: Vec<f32> = zeroed(len);
        assert_eq!(reused.as_ptr() as usize, address);
        assert!(reused.len() == len && reused.iter().all(|&v| v == 0.0));
        recycle(reused);
        let reused: Vec<f32> = with_capacity(len);
        assert_eq!((reused.as_ptr() as usize, reused.len(), reused.capacity()), (address, 0, len));
        // For a caller that overwrites everything, the old values are left in place.
        let mut sevens = reused;
        sevens.resize(len, 7.0);
        recycle(sevens);
        let stale: Vec<f32> = for_overwrite(len);
        assert_eq!(stale.as_ptr() as usize, address);
        assert!(stale.len() == len && stale.iter().all(|&v| v == 7.0));
        // Nothing pooled: zeros.
        let fresh: Vec<f32> = for_overwrite(len + 2);
        assert!(fresh.len() == len + 2 && fresh.iter().all(|&v| v == 0.0));
    }

    /// Buffers the pool holds of this type and capacity.
    fn held<T: 'static>(capacity: usize) -> usize {
        pool().free.get(&(TypeId::of::<T>(), capacity)).map_or(0, Vec::len)
    }

    #[test]
    fn small_buffers_are_not_kept() {
        let (small, large) = (MIN_BYTES / 8 - 3, MIN_BYTES / 8 + 4_321);
        recycle(vec![1.0f64; small]);
        recycle(vec![1.0f64; large]);
        assert_eq!((held::<f64>(small), held::<f64>(large)), (0, 1));
        let _taken: Vec<f64> = with_capacity(large);
        assert_eq!(held::<f64>(large), 0);
    }
}
