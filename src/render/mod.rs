//! Pictures: PNG grids of images, line and scatter plots, and the rasteriser that
//! draws the plots into PNG files.
//!
//! - [`image`]: grids of grey images;
//! - [`plot`]: what a plot holds and its frame;
//! - [`raster`]: a plot drawn into pixels and saved as PNG.

pub mod image;
pub mod plot;
pub mod raster;
