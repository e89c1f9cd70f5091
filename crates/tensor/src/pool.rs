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
//!
//! Not every buffer given back is asked for again: noise drawn for a step, a
//! vector made by `to_vec`, the shapes of the memory probe before training or
//! of sampling after it. So the pool keeps, of each length, at most as many
//! buffers as were asked for in the last two sweeps ([`SWEEP_EVERY`] requests
//! each, more than a course-UNet step makes); the rest are freed, and a length
//! nobody asks for any more is forgotten.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

/// Smaller buffers are not kept: 32 KiB.
pub const MIN_BYTES: usize = 32 << 10;

/// The most the pool keeps, in bytes: 2 GiB.
pub const MAX_BYTES: usize = 2 << 30;

/// Requests between two sweeps. A course-UNet training step makes 657, so a
/// sweep sees at least one whole step's demand for every length.
pub const SWEEP_EVERY: u64 = 1_024;

/// The free buffers of one (element type, capacity), each a `Vec<T>` of that type.
struct Shelf {
    buffers: Vec<Box<dyn Any + Send>>,
    /// Bytes of each buffer.
    bytes_each: usize,
    /// Requests for this length since the last sweep, and in the sweep before.
    requests: u64,
    requests_before: u64,
}

#[derive(Default)]
struct Pool {
    free: HashMap<(TypeId, usize), Shelf>,
    /// Bytes held in `free`.
    bytes: usize,
    /// Requests so far.
    clock: u64,
}

impl Pool {
    /// Trims each shelf to the larger of its last two sweeps' requests, and
    /// forgets the lengths requested in neither.
    fn sweep(&mut self) {
        let mut freed = 0;
        self.free.retain(|_, shelf| {
            let wanted = shelf.requests.max(shelf.requests_before);
            let keep = usize::try_from(wanted).unwrap_or(usize::MAX).min(shelf.buffers.len());
            freed += (shelf.buffers.len() - keep) * shelf.bytes_each;
            shelf.buffers.truncate(keep);
            (shelf.requests_before, shelf.requests) = (shelf.requests, 0);
            wanted > 0
        });
        self.bytes -= freed;
    }

    /// Puts `buffer` (of `bytes`) on the shelf of `key` if that length is wanted
    /// and the pool stays within `max_bytes`; returns whether it did.
    fn shelve(&mut self, key: (TypeId, usize), buffer: Box<dyn Any + Send>, bytes: usize, max_bytes: usize) -> bool {
        if self.bytes + bytes > max_bytes {
            return false;
        }
        let Some(shelf) = self.free.get_mut(&key) else { return false };
        shelf.buffers.push(buffer);
        self.bytes += bytes;
        true
    }
}

static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(|| Mutex::new(Pool::default()));

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // A panic while the lock was held leaves the pool consistent (every update
    // is a single push or pop), so a poisoned lock is still usable.
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shelf key and the bytes of a `Vec<T>` of capacity `capacity`, if the
/// pool keeps buffers that large (at least [`MIN_BYTES`]).
fn shelf_of<T: 'static>(capacity: usize) -> Option<((TypeId, usize), usize)> {
    let bytes = capacity * std::mem::size_of::<T>();
    (bytes >= MIN_BYTES).then_some(((TypeId::of::<T>(), capacity), bytes))
}

/// A pooled buffer of capacity `len`, as it was given back (its old values
/// still in it), if there is one.
fn take<T: Copy + Send + 'static>(len: usize) -> Option<Vec<T>> {
    let (key, bytes) = shelf_of::<T>(len)?;
    let mut pool = pool();
    pool.clock += 1;
    if pool.clock.is_multiple_of(SWEEP_EVERY) {
        pool.sweep();
    }
    // A miss counts as a request too: the shelf it opens takes the next buffer of this length given back.
    let shelf = pool.free.entry(key).or_insert_with(|| Shelf { buffers: Vec::new(), bytes_each: bytes, requests: 0, requests_before: 0 });
    shelf.requests += 1;
    let buffer = shelf.buffers.pop()?;
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

/// Gives a buffer back for reuse, if its length has been asked for (see the
/// module docs); else, or when the pool is full, frees it.
pub fn recycle<T: Copy + Send + 'static>(buffer: Vec<T>) {
    if let Some((key, bytes)) = shelf_of::<T>(buffer.capacity()) {
        pool().shelve(key, Box::new(buffer), bytes, MAX_BYTES);
    }
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

    /// The tests below count what the pool holds, so they run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the pool tracks this type and length (has a shelf for it).
    fn known<T: 'static>(len: usize) -> bool {
        pool().free.contains_key(&(TypeId::of::<T>(), len))
    }

    /// Buffers the pool holds of this type and capacity.
    fn held<T: 'static>(capacity: usize) -> usize {
        pool().free.get(&(TypeId::of::<T>(), capacity)).map_or(0, |shelf| shelf.buffers.len())
    }

    /// The pool's byte count equals the bytes on its shelves (read under one lock).
    fn assert_bytes_add_up() {
        let pool = pool();
        let on_shelves: usize = pool.free.values().map(|shelf| shelf.buffers.len() * shelf.bytes_each).sum();
        assert_eq!(pool.bytes, on_shelves, "pooled bytes counted");
    }

    #[test]
    fn a_recycled_buffer_is_reused_for_the_same_length_and_type_only() {
        let _serial = serial();
        // A length no other test in this binary uses, so parallel tests do not take it.
        let len = MIN_BYTES / 4 + 12_345;
        // Nothing pooled yet: new zeros, and from now on this length is wanted.
        let mut buffer: Vec<f32> = zeroed(len);
        buffer.fill(7.0);
        let address = buffer.as_ptr() as usize;
        recycle(buffer);
        assert_eq!(held::<f32>(len), 1);
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

    #[test]
    fn the_pool_keeps_only_what_is_asked_for() {
        let _serial = serial();
        let (never, once, busy) = (MIN_BYTES / 4 + 54_321, MIN_BYTES / 4 + 65_432, MIN_BYTES / 4 + 76_543);
        recycle(vec![0u32; never]);
        assert_eq!(held::<u32>(never), 0, "a length nobody asked for is freed at once");
        let first: Vec<u32> = with_capacity(once);
        recycle(first);
        assert_eq!(held::<u32>(once), 1);
        // A few hundred requests for other lengths (fewer than a sweep's worth) leave it there.
        for _ in 0..300 {
            let other: Vec<u32> = with_capacity(busy);
            recycle(other);
        }
        assert_eq!(held::<u32>(once), 1, "kept between sweeps");
        // `busy` is asked for once per round but given back twice (the second buffer made
        // elsewhere, as noise drawn for a step is): the sweeps trim it to what is asked for.
        for _ in 0..3 * SWEEP_EVERY {
            let buffer: Vec<u32> = with_capacity(busy);
            recycle(buffer);
            recycle(vec![0u32; busy]);
        }
        let busy_held = held::<u32>(busy);
        assert!((1..2 * SWEEP_EVERY as usize).contains(&busy_held), "{busy_held} buffers of the busy length");
        // Right after a sweep, the busy length keeps about what it was asked for in a sweep.
        loop {
            let buffer: Vec<u32> = with_capacity(busy);
            recycle(buffer);
            recycle(vec![0u32; busy]);
            if pool().clock.is_multiple_of(SWEEP_EVERY) {
                break;
            }
        }
        let after_sweep = held::<u32>(busy);
        assert!((SWEEP_EVERY as usize / 2..=SWEEP_EVERY as usize + 2).contains(&after_sweep), "{after_sweep} kept by a sweep");
        assert!(!known::<u32>(once), "a length not asked for in two sweeps is forgotten");
        assert!(known::<u32>(busy));
        assert_bytes_add_up();
    }

    #[test]
    fn the_pool_stays_within_its_limit() {
        // A pool of its own with a 250-byte limit: two 100-byte buffers fit, a third does not;
        // with a 300-byte limit the third fits exactly.
        for (max_bytes, third_fits) in [(250, false), (300, true)] {
            let mut pool = Pool::default();
            let key = (TypeId::of::<u8>(), 100);
            let shelf = Shelf { buffers: Vec::new(), bytes_each: 100, requests: 1, requests_before: 0 };
            pool.free.insert(key, shelf);
            assert!(!pool.shelve((TypeId::of::<u8>(), 99), Box::new(vec![0u8; 99]), 99, max_bytes), "a length nobody asked for");
            assert!(pool.shelve(key, Box::new(vec![0u8; 100]), 100, max_bytes));
            assert!(pool.shelve(key, Box::new(vec![0u8; 100]), 100, max_bytes));
            assert_eq!(pool.shelve(key, Box::new(vec![0u8; 100]), 100, max_bytes), third_fits, "limit {max_bytes}");
            assert_eq!(pool.bytes, if third_fits { 300 } else { 200 });
        }
    }

    #[test]
    fn small_buffers_are_not_kept() {
        let _serial = serial();
        let (small, large) = (MIN_BYTES / 8 - 3, MIN_BYTES / 8 + 4_321);
        let (s, l): (Vec<f64>, Vec<f64>) = (with_capacity(small), with_capacity(large));
        recycle(s);
        recycle(l);
        assert_eq!((held::<f64>(small), held::<f64>(large)), (0, 1));
        assert!(!known::<f64>(small), "small lengths are not tracked at all");
        let edge: Vec<f64> = with_capacity(MIN_BYTES / 8);
        assert!(known::<f64>(MIN_BYTES / 8), "a buffer of exactly MIN_BYTES is pooled");
        recycle(edge);
        assert_eq!(held::<f64>(MIN_BYTES / 8), 1);
        let _taken: Vec<f64> = with_capacity(large);
        assert_eq!(held::<f64>(large), 0);
        assert_bytes_add_up();
    }
}
