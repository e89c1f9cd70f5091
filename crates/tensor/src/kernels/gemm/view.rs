//! Strided matrix views: a slice plus (rows, cols, row stride, column stride).
//!
//! Element (i, j) of a view lives at `data[i * rs + j * cs]`; strides count
//! elements, not bytes. A row-major `m x n` matrix has `(rs, cs) = (n, 1)`, a
//! column-major one `(1, m)`, and the transpose of a view is the same slice
//! with the strides swapped, so `A^T` never has to be copied.

/// Read-only strided view of a `rows x cols` matrix: element `(i, j)` is
/// `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// Mutable strided view of a `rows x cols` matrix: element `(i, j)` is
/// `data[i * rs + j * cs]`.
///
/// The view never aliases itself: one stride steps over a whole line of the
/// other (`rs >= (cols - 1) * cs + 1` or `cs >= (rows - 1) * rs + 1`), so no
/// two elements share a slot. [`MatMut::new`] checks it.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// Largest index a `rows x cols` view with strides `(rs, cs)` touches, or
/// `None` for an empty view or on overflow.
fn max_index(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<Option<usize>> {
    if rows == 0 || cols == 0 {
        return Some(None);
    }
    let last_row = (rows - 1).checked_mul(rs)?;
    let last_col = (cols - 1).checked_mul(cs)?;
    Some(Some(last_row.checked_add(last_col)?))
}

/// True if the rows of the view occupy disjoint, increasing index ranges:
/// row `i` spans `[i * rs, i * rs + (cols - 1) * cs]` and ends before row
/// `i + 1` starts. Then a block of rows is a contiguous sub-slice, which is
/// what lets the GEMM hand bands of rows of C to different threads.
fn rows_disjoint(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let row_span_ok = cols <= 1 || cs >= 1;
    let rows_ok = rows <= 1 || (cols - 1).saturating_mul(cs) < rs;
    row_span_ok && rows_ok
}

impl<'a, T> MatRef<'a, T> {
    /// A view of `data` as a `rows x cols` matrix with strides `(rs, cs)`.
    ///
    /// Returns `None` if the largest index `(rows-1)*rs + (cols-1)*cs` is out
    /// of bounds of `data`.
    #[must_use]
    pub fn new(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Option<Self> {
        match max_index(rows, cols, rs, cs)? {
            Some(last) if last >= data.len() => None,
            _ => Some(MatRef { data, rows, cols, rs, cs }),
        }
    }

    /// The transpose, as a view of the same data with the strides swapped.
    #[must_use]
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row stride, in elements.
    pub fn row_stride(&self) -> usize {
        self.rs
    }

    /// Column stride, in elements.
    pub fn col_stride(&self) -> usize {
        self.cs
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// If `i >= rows` or `j >= cols`.
    pub fn at(&self, i: usize, j: usize) -> T
    where
        T: Copy,
    {
        assert!(i < self.rows && j < self.cols, "MatRef::at({i}, {j}) on a {}x{} view", self.rows, self.cols);
        self.data[i * self.rs + j * self.cs]
    }

    /// The `rows x cols` block whose top-left element is `(row0, col0)`.
    ///
    /// # Panics
    /// If the block does not fit inside the view.
    #[must_use]
    pub fn submatrix(self, row0: usize, col0: usize, rows: usize, cols: usize) -> Self {
        assert!(
            row0 + rows <= self.rows && col0 + cols <= self.cols,
            "submatrix ({row0}, {col0}) + {rows}x{cols} of a {}x{} view",
            self.rows,
            self.cols
        );
        if rows == 0 || cols == 0 {
            return MatRef { data: &self.data[..0], rows, cols, rs: self.rs, cs: self.cs };
        }
        let start = row0 * self.rs + col0 * self.cs;
        MatRef { data: &self.data[start..], rows, cols, rs: self.rs, cs: self.cs }
    }

    /// The underlying slice, starting at element (0, 0).
    pub(crate) fn data(&self) -> &'a [T] {
        self.data
    }
}

impl<'a, T> MatMut<'a, T> {
    /// A mutable view of `data` as a `rows x cols` matrix with strides `(rs, cs)`.
    ///
    /// Returns `None` if the largest index is out of bounds of `data`, or if
    /// the strides would make two elements share a slot (see [`MatMut`]).
    #[must_use]
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Option<Self> {
        if let Some(last) = max_index(rows, cols, rs, cs)? {
            if last >= data.len() {
                return None;
            }
        }
        let disjoint = rows_disjoint(rows, cols, rs, cs) || rows_disjoint(cols, rows, cs, rs);
        disjoint.then_some(MatMut { data, rows, cols, rs, cs })
    }

    /// The transpose, as a view of the same data with the strides swapped.
    #[must_use]
    pub fn t(self) -> Self {
        MatMut { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row stride, in elements.
    pub fn row_stride(&self) -> usize {
        self.rs
    }

    /// Column stride, in elements.
    pub fn col_stride(&self) -> usize {
        self.cs
    }

    /// A read-only view of the same elements.
    #[must_use]
    pub fn as_ref(&self) -> MatRef<'_, T> {
        MatRef { data: self.data, rows: self.rows, cols: self.cols, rs: self.rs, cs: self.cs }
    }

    /// A shorter-lived mutable view of the same elements (a reborrow).
    pub fn rb(&mut self) -> MatMut<'_, T> {
        MatMut { data: self.data, rows: self.rows, cols: self.cols, rs: self.rs, cs: self.cs }
    }

    /// True if each row is a contiguous index range that ends before the next
    /// row starts (see [`rows_disjoint`]). If it is false, the transpose's is true.
    pub(crate) fn rows_disjoint(&self) -> bool {
        rows_disjoint(self.rows, self.cols, self.rs, self.cs)
    }

    /// The columns `col0 .. col0 + cols` as a view.
    ///
    /// # Panics
    /// If the columns do not fit inside the view.
    pub(crate) fn columns(self, col0: usize, cols: usize) -> Self {
        assert!(col0 + cols <= self.cols, "columns {col0}..{} of a view with {} columns", col0 + cols, self.cols);
        let start = if self.rows == 0 || cols == 0 { 0 } else { col0 * self.cs };
        MatMut { data: &mut self.data[start..], rows: self.rows, cols, rs: self.rs, cs: self.cs }
    }

    /// Splits into rows `0..row` and `row..rows`, two views that own disjoint
    /// parts of the slice.
    ///
    /// # Panics
    /// If `row > rows`, or if the rows are not disjoint index ranges.
    pub(crate) fn split_at_row(self, row: usize) -> (Self, Self) {
        assert!(row <= self.rows && self.rows_disjoint(), "split_at_row({row}) of a {}x{} view", self.rows, self.cols);
        // Rows are disjoint increasing ranges, so rows 0..row all lie below
        // index row * rs and rows row.. at or above it.
        let at = if row == self.rows { self.data.len() } else { row * self.rs };
        let (top, bottom) = self.data.split_at_mut(at.min(self.data.len()));
        (
            MatMut { data: top, rows: row, cols: self.cols, rs: self.rs, cs: self.cs },
            MatMut { data: bottom, rows: self.rows - row, cols: self.cols, rs: self.rs, cs: self.cs },
        )
    }

    /// The underlying slice, starting at element (0, 0).
    pub(crate) fn data_mut(&mut self) -> &mut [T] {
        self.data
    }

    /// Element `(i, j)`, for the oracle and the scaling path.
    pub(crate) fn at_mut(&mut self, i: usize, j: usize) -> &mut T {
        debug_assert!(i < self.rows && j < self.cols);
        &mut self.data[i * self.rs + j * self.cs]
    }
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// Splits into rows `0..row` and `row..rows` (read-only, so no disjointness needed).
    pub(crate) fn split_at_row(self, row: usize) -> (Self, Self) {
        assert!(row <= self.rows);
        let top = MatRef { rows: row, ..self };
        let bottom = if row == self.rows || self.cols == 0 {
            MatRef { data: &self.data[..0], rows: self.rows - row, ..self }
        } else {
            MatRef { data: &self.data[row * self.rs..], rows: self.rows - row, ..self }
        };
        (top, bottom)
    }
}
