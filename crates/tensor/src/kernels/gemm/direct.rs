//! B read where it lies: micro-panels of B that are never packed.
//!
//! Packing B~ (LOOP 4) pays for itself when each micro-panel meets many A~
//! micro-panels in LOOP 1: the copy is made once and read `m / MR` times.
//! A convolution with few channels has a small `m` (16 output channels are
//! two A~ micro-panels of `MR = 12`), so each packed number is read twice
//! and the copy costs about as much as the arithmetic it feeds. Measured on
//! the Intel Xeon of session 11, one thread, `k = 192, n = 320`, packed: `m =
//! 4` ran at 30-42 GFLOP/s, `m = 12` at 65-88, `m = 24` at 83-116 (the same
//! product with `m = 192` and `k = 192, n = 840`: 107).
//!
//! The B of a convolution is a view of an image, and every row of one of its
//! micro-panels is made of runs of consecutive memory: for the forward pass
//! ([`Im2col`](super::super::conv)) the whole 32-wide row is one slice of the
//! padded image; for the weight gradient (`Im2row`) each run of 16 columns
//! is 16 consecutive channels of one pixel. A [`DirectB`] says where those
//! runs are, and a microkernel that has a direct form (the AVX-512 one)
//! loads them in place:
//!
//! ```text
//! B[pc + p, col + v] = base[row_offset(pc + p) + segment_offset(col) + v]
//!     for v < SEGMENT, col a multiple of SEGMENT
//! ```
//!
//! The numbers that meet in the microkernel and their order are those of the
//! packed path, so the product is bit-identical to it; only the copy is gone.
//! On that machine the eight 3x3 convolution shapes of the quick UNet (batch
//! 64, two threads, summed, two alternations) went from 19.4-19.8 ms to
//! 13.8-16.1 forward, 16.9-17.3 to 14.1-16.1 grad input and 26.6-27.2 to
//! 19.3-21.6 weight gradient.

/// Columns of B that one segment offset covers: a 512-bit register of f32.
pub const SEGMENT: usize = 16;

/// A [`PackB`](super::PackB) whose entries can be read in place, in runs of
/// [`SEGMENT`] columns (see the top of `direct.rs`).
pub trait DirectB<T>: Sync {
    /// The memory every entry of B lives in. Reads may go up to `SEGMENT`
    /// columns past B's last column (the junk columns of the last micro-panel,
    /// never stored), so it must reach that far.
    fn base(&self) -> &[T];

    /// `offsets[p]` = where row `pc + p` starts in [`base`](DirectB::base),
    /// for every `p < offsets.len()`.
    fn row_offsets(&self, pc: usize, offsets: &mut [usize]);

    /// Where the run of columns `col .. col + SEGMENT` starts, relative to a
    /// row's offset; `col` is a multiple of `SEGMENT` and below `cols()`.
    fn segment_offset(&self, col: usize) -> usize;
}

/// The row offsets of one `kc` block of a [`DirectB`], with their largest
/// value (which bounds every read of the microkernel).
pub(crate) struct DirectRows<'a> {
    offsets: &'a [usize],
    max: usize,
}

impl<'a> DirectRows<'a> {
    pub(crate) fn new(offsets: &'a [usize]) -> Self {
        DirectRows { offsets, max: offsets.iter().copied().max().unwrap_or(0) }
    }
}

/// One micro-panel of a [`DirectB`], `kc x 2 SEGMENT`, as the direct
/// microkernel reads it: `B~[p, h * SEGMENT + v] = base[rows[p] + segments[h] + v]`.
pub(crate) struct DirectPanel<'a, T> {
    base: &'a [T],
    rows: &'a DirectRows<'a>,
    segments: [usize; 2],
}

impl<'a, T> DirectPanel<'a, T> {
    pub(crate) fn new(base: &'a [T], rows: &'a DirectRows<'a>, segments: [usize; 2]) -> Self {
        DirectPanel { base, rows, segments }
    }

    /// `base`, and the rows' offsets.
    pub(crate) fn parts(&self) -> (&'a [T], &'a [usize], [usize; 2]) {
        (self.base, self.rows.offsets, self.segments)
    }

    /// True if every read `base[rows[p] + segments[h] + v]`, `v < SEGMENT`,
    /// falls inside `base`.
    pub(crate) fn in_bounds(&self) -> bool {
        let widest = self.segments[0].max(self.segments[1]);
        self.rows.max + widest + SEGMENT <= self.base.len()
    }
}
