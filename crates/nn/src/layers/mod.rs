//! The layers: thin wrappers that own parameters and call one tensor op.

pub mod conv2d;
pub mod dropout;
pub mod group_norm;
pub mod linear;
pub mod silu;
pub mod timestep_embedding;
