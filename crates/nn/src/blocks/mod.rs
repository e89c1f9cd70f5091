//! The building blocks of the UNet, each a small composition of layers.

pub mod attention;
pub mod res_block;
pub mod resample;
pub mod time_embedding;
