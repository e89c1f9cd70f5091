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
//!
//! A B may also be zero in places it does not store: a convolution's zero
//! padding, when B is read from the image without it (`Im2colInPlace` in
//! `conv/implicit.rs`). Such a B is a [`MaskedRuns`]: for each row of a
//! micro-panel it gives two 16-bit lane masks, and the microkernel loads each
//! run with its mask, zeros in the lanes left out, which it does not read
//! (they may lie outside the image). The numbers that meet and their order
//! are again those of the packed path.

/// Columns of B that one segment offset covers: a 512-bit register of f32.
pub const SEGMENT: usize = 16;
const _: () = assert!(SEGMENT == 16, "a lane mask is a u16");

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

    /// The lanes of each run that are read, for a B that is zero where it
    /// stores nothing (see [`MaskedRuns`]); `None` (the default) if every
    /// entry of a run is read.
    fn masked(&self) -> Option<&dyn MaskedRuns> {
        None
    }
}

/// A [`DirectB`] that is zero in places it does not store, such as a
/// convolution's zero padding read from the image without it: each run
/// reads only the lanes its mask sets, and the others are zero.
///
/// # Safety
/// Every lane that [`lane_masks`](MaskedRuns::lane_masks) sets must lie
/// inside `base()` of the [`DirectB`] (counted from [`origin`](MaskedRuns::origin)
/// elements before it): the direct microkernel reads those lanes and no
/// others, and checks them only in debug builds (a check per row costs as
/// much as the row's multiply-adds).
pub unsafe trait MaskedRuns: Sync {
    /// How far before the start of `base()` offset 0 lies: entry `v` of a
    /// run is `base()[offset + v - origin]`, so a run may start before
    /// `base()` with its first lanes masked off.
    fn origin(&self) -> usize;

    /// The masks of the rows from `pc` on of the micro-panel whose first
    /// column is `col` (a multiple of `2 * SEGMENT`): bit `v` of `masks[p][h]`
    /// set if column `col + h * SEGMENT + v` of row `pc + p` is read from
    /// `base()`, clear if the entry is zero; at least as many as the rows
    /// from `pc` on.
    fn lane_masks(&self, pc: usize, col: usize) -> &[[u16; 2]];
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
/// microkernel reads it: `B~[p, h * SEGMENT + v] = base[rows[p] + segments[h] + v]`,
/// or, with lane masks, that entry less `origin` where bit `v` of
/// `masks[p][h]` is set and 0 where it is clear.
pub(crate) struct DirectPanel<'a, T> {
    base: &'a [T],
    rows: &'a DirectRows<'a>,
    segments: [usize; 2],
    masked: Option<Masked<'a>>,
}

/// The lane masks of a [`DirectPanel`] and the origin of its offsets.
#[derive(Clone, Copy)]
pub(crate) struct Masked<'a> {
    pub masks: &'a [[u16; 2]],
    pub origin: usize,
}

impl<'a, T> DirectPanel<'a, T> {
    pub(crate) fn new(base: &'a [T], rows: &'a DirectRows<'a>, segments: [usize; 2], masked: Option<Masked<'a>>) -> Self {
        DirectPanel { base, rows, segments, masked }
    }

    /// `base`, the rows' offsets, the segments' and the lane masks, if any.
    pub(crate) fn parts(&self) -> (&'a [T], &'a [usize], [usize; 2], Option<Masked<'a>>) {
        (self.base, self.rows.offsets, self.segments, self.masked)
    }

    /// True if every read falls inside `base`: without masks, every
    /// `base[rows[p] + segments[h] + v]`, `v < SEGMENT`; with them, there
    /// is a mask for every row, and in debug builds the lanes each mask
    /// sets (the first and the last of them, and so all between) are
    /// checked too (in release builds [`MaskedRuns`] promises them).
    pub(crate) fn in_bounds(&self) -> bool {
        let Some(Masked { masks, origin }) = self.masked else {
            let widest = self.segments[0].max(self.segments[1]);
            // Checked: an offset near usize::MAX must not wrap into a pass.
            return self.rows.max.checked_add(widest).and_then(|end| end.checked_add(SEGMENT)).is_some_and(|end| end <= self.base.len());
        };
        if !cfg!(debug_assertions) {
            return masks.len() >= self.rows.offsets.len();
        }
        let read_lanes_inside = |(&row, mask): (&usize, &[u16; 2])| {
            self.segments.iter().zip(mask).all(|(&segment, &lanes)| {
                let start = row + segment;
                lanes == 0 || {
                    let (first, last) = (lanes.trailing_zeros() as usize, 15 - lanes.leading_zeros() as usize);
                    start + first >= origin && start + last < origin + self.base.len()
                }
            })
        };
        masks.len() >= self.rows.offsets.len() && self.rows.offsets.iter().zip(masks).all(read_lanes_inside)
    }
}
