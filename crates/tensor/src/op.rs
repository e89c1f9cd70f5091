//! The op enum: every primitive the autograd knows, with the inputs it needs for its
//! gradient.
//!
//! The match in [`crate::backprop`] over this enum is exhaustive, so a new primitive
//! without a gradient rule does not compile. Composite ops (mean, var, softmax,
//! log_softmax, mse_loss, stack...) are built from these and need no rule of their
//! own. Each primitive's forward and backward live side by side in `ops/`.

use crate::element::Float;
use crate::tensor::Tensor;
use std::sync::Arc;

/// A recorded primitive op and its inputs.
#[derive(Clone, Debug)]
pub enum Op<T: Float> {
    // Elementwise unary (ops/unary.rs).
    Neg(Tensor<T>),
    Exp(Tensor<T>),
    Log(Tensor<T>),
    Sqrt(Tensor<T>),
    Tanh(Tensor<T>),
    Sigmoid(Tensor<T>),
    Relu(Tensor<T>),
    Silu(Tensor<T>),
    Gelu(Tensor<T>),
    Abs(Tensor<T>),
    Powf(Tensor<T>, T),
    Clamp(Tensor<T>, T, T),
    /// `x * mul + add` with scalar `mul`, `add`.
    Affine(Tensor<T>, T, T),
    // Elementwise binary with broadcasting (ops/binary.rs).
    Add(Tensor<T>, Tensor<T>),
    Sub(Tensor<T>, Tensor<T>),
    Mul(Tensor<T>, Tensor<T>),
    Div(Tensor<T>, Tensor<T>),
    Maximum(Tensor<T>, Tensor<T>),
    // Reductions (ops/reduce.rs). `axes` are sorted.
    Sum {
        x: Tensor<T>,
        axes: Vec<usize>,
    },
    /// `argmax[i]`: the row-major index in `x` of the maximum behind output element i.
    Max {
        x: Tensor<T>,
        argmax: Arc<Vec<usize>>,
    },
    // Views and copies (ops/view.rs).
    Reshape(Tensor<T>),
    Permute(Tensor<T>, Vec<usize>),
    Narrow {
        x: Tensor<T>,
        axis: usize,
        start: usize,
    },
    BroadcastTo(Tensor<T>),
    Copy(Tensor<T>),
    Cat {
        xs: Vec<Tensor<T>>,
        axis: usize,
    },
    // Linear algebra and convolution (ops/matmul.rs, ops/conv.rs).
    Matmul(Tensor<T>, Tensor<T>),
    Conv2d {
        x: Tensor<T>,
        weight: Tensor<T>,
        bias: Option<Tensor<T>>,
        stride: usize,
        padding: usize,
    },
    // Normalisation and resampling (ops/norm.rs, ops/upsample.rs).
    /// `mean`, `rstd`: per (n, group), saved by the forward for the backward.
    /// With `silu`, the op is `silu(group_norm(x))` in one pass (`OpKind::GroupNormSilu`);
    /// its backward recomputes the normalised values instead of keeping them.
    GroupNorm {
        x: Tensor<T>,
        weight: Tensor<T>,
        bias: Tensor<T>,
        groups: usize,
        mean: Arc<Vec<T>>,
        rstd: Arc<Vec<T>>,
        silu: bool,
    },
    UpsampleNearest2d {
        x: Tensor<T>,
        scale: usize,
    },
    // Attention (ops/attention.rs).
    /// `qkv` `[B, 3C, L]`; `weights` the softmax weights `P` `[B, L, L]` the
    /// forward computed, saved for the backward (a tensor, so that its buffer
    /// goes back to the pool with the graph; no gradient flows to it).
    Attention {
        qkv: Tensor<T>,
        weights: Tensor<T>,
    },
    // Selection (ops/select.rs). The mask and the indices get no gradient.
    Where {
        mask: Tensor<T>,
        a: Tensor<T>,
        b: Tensor<T>,
    },
    IndexSelect {
        x: Tensor<T>,
        axis: usize,
        indices: Arc<Vec<usize>>,
    },
    Gather {
        x: Tensor<T>,
        axis: usize,
        index: Arc<Vec<usize>>,
    },
}

macro_rules! op_kinds {
    ($($kind:ident),* $(,)?) => {
        /// The name of each primitive, without its data.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OpKind { $($kind),* }

        impl OpKind {
            /// Every primitive. The gradient-check test asserts it checked each one.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$kind),*];
        }
    };
}

op_kinds!(
    Neg,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Sigmoid,
    Relu,
    Silu,
    Gelu,
    Abs,
    Powf,
    Clamp,
    Affine,
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Sum,
    Max,
    Reshape,
    Permute,
    Narrow,
    BroadcastTo,
    Copy,
    Cat,
    Matmul,
    Conv2d,
    GroupNorm,
    GroupNormSilu,
    UpsampleNearest2d,
    Attention,
    Where,
    IndexSelect,
    Gather,
);

impl<T: Float> Op<T> {
    /// Which primitive this is.
    #[must_use]
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Neg(_) => OpKind::Neg,
            Op::Exp(_) => OpKind::Exp,
            Op::Log(_) => OpKind::Log,
            Op::Sqrt(_) => OpKind::Sqrt,
            Op::Tanh(_) => OpKind::Tanh,
            Op::Sigmoid(_) => OpKind::Sigmoid,
            Op::Relu(_) => OpKind::Relu,
            Op::Silu(_) => OpKind::Silu,
            Op::Gelu(_) => OpKind::Gelu,
            Op::Abs(_) => OpKind::Abs,
            Op::Powf(..) => OpKind::Powf,
            Op::Clamp(..) => OpKind::Clamp,
            Op::Affine(..) => OpKind::Affine,
            Op::Add(..) => OpKind::Add,
            Op::Sub(..) => OpKind::Sub,
            Op::Mul(..) => OpKind::Mul,
            Op::Div(..) => OpKind::Div,
            Op::Maximum(..) => OpKind::Maximum,
            Op::Sum { .. } => OpKind::Sum,
            Op::Max { .. } => OpKind::Max,
            Op::Reshape(_) => OpKind::Reshape,
            Op::Permute(..) => OpKind::Permute,
            Op::Narrow { .. } => OpKind::Narrow,
            Op::BroadcastTo(_) => OpKind::BroadcastTo,
            Op::Copy(_) => OpKind::Copy,
            Op::Cat { .. } => OpKind::Cat,
            Op::Matmul(..) => OpKind::Matmul,
            Op::Conv2d { .. } => OpKind::Conv2d,
            Op::GroupNorm { silu: false, .. } => OpKind::GroupNorm,
            Op::GroupNorm { silu: true, .. } => OpKind::GroupNormSilu,
            Op::UpsampleNearest2d { .. } => OpKind::UpsampleNearest2d,
            Op::Attention { .. } => OpKind::Attention,
            Op::Where { .. } => OpKind::Where,
            Op::IndexSelect { .. } => OpKind::IndexSelect,
            Op::Gather { .. } => OpKind::Gather,
        }
    }

    /// True when this op's gradient rule reads the op's own output (`exp`,
    /// `sqrt`, `tanh` and `sigmoid` differentiate through `y`), so a node made by
    /// it keeps its values as long as the graph does.
    #[must_use]
    pub fn rule_reads_output(&self) -> bool {
        match self {
            Op::Exp(_) | Op::Sqrt(_) | Op::Tanh(_) | Op::Sigmoid(_) => true,
            Op::Neg(_)
            | Op::Log(_)
            | Op::Relu(_)
            | Op::Silu(_)
            | Op::Gelu(_)
            | Op::Abs(_)
            | Op::Powf(..)
            | Op::Clamp(..)
            | Op::Affine(..)
            | Op::Add(..)
            | Op::Sub(..)
            | Op::Mul(..)
            | Op::Div(..)
            | Op::Maximum(..)
            | Op::Sum { .. }
            | Op::Max { .. }
            | Op::Reshape(_)
            | Op::Permute(..)
            | Op::Narrow { .. }
            | Op::BroadcastTo(_)
            | Op::Copy(_)
            | Op::Cat { .. }
            | Op::Matmul(..)
            | Op::Conv2d { .. }
            | Op::GroupNorm { .. }
            | Op::UpsampleNearest2d { .. }
            | Op::Attention { .. }
            | Op::Where { .. }
            | Op::IndexSelect { .. }
            | Op::Gather { .. } => false,
        }
    }

    /// The op as the graph keeps it: every input whose values the gradient rule
    /// never reads (the rule needs only its shape: add, sub, reshape, cat, ...) is
    /// replaced by its shape-only twin ([`Tensor::shape_only`]). Without this, the
    /// graph holds every intermediate result until the backward: the output of
    /// each convolution followed by a residual or time-embedding add, for one,
    /// which nothing reads again. The inputs whose values a rule reads (the
    /// factors of a product, the input of a convolution or a norm) stay whole.
    pub(crate) fn keeping_only_read_values(self) -> Self {
        let shape = |x: Tensor<T>| x.shape_only();
        match self {
            Op::Neg(x) => Op::Neg(shape(x)),
            Op::Exp(x) => Op::Exp(shape(x)),
            Op::Sqrt(x) => Op::Sqrt(shape(x)),
            Op::Tanh(x) => Op::Tanh(shape(x)),
            Op::Sigmoid(x) => Op::Sigmoid(shape(x)),
            Op::Affine(x, mul, add) => Op::Affine(shape(x), mul, add),
            Op::Add(a, b) => Op::Add(shape(a), shape(b)),
            Op::Sub(a, b) => Op::Sub(shape(a), shape(b)),
            Op::Sum { x, axes } => Op::Sum { x: shape(x), axes },
            Op::Max { x, argmax } => Op::Max { x: shape(x), argmax },
            Op::Reshape(x) => Op::Reshape(shape(x)),
            Op::Permute(x, perm) => Op::Permute(shape(x), perm),
            Op::Narrow { x, axis, start } => Op::Narrow { x: shape(x), axis, start },
            Op::BroadcastTo(x) => Op::BroadcastTo(shape(x)),
            Op::Copy(x) => Op::Copy(shape(x)),
            Op::Cat { xs, axis } => Op::Cat { xs: xs.into_iter().map(shape).collect(), axis },
            Op::UpsampleNearest2d { x, scale } => Op::UpsampleNearest2d { x: shape(x), scale },
            Op::Where { mask, a, b } => Op::Where { mask, a: shape(a), b: shape(b) },
            Op::IndexSelect { x, axis, indices } => Op::IndexSelect { x: shape(x), axis, indices },
            Op::Gather { x, axis, index } => Op::Gather { x: shape(x), axis, index },
            read @ (Op::Log(_)
            | Op::Relu(_)
            | Op::Silu(_)
            | Op::Gelu(_)
            | Op::Abs(_)
            | Op::Powf(..)
            | Op::Clamp(..)
            | Op::Mul(..)
            | Op::Div(..)
            | Op::Maximum(..)
            | Op::Matmul(..)
            | Op::Conv2d { .. }
            | Op::GroupNorm { .. }
            | Op::Attention { .. }) => read,
        }
    }

    /// The tensors this op read (those a gradient may flow to, plus masks).
    #[must_use]
    pub fn inputs(&self) -> Vec<&Tensor<T>> {
        match self {
            Op::Neg(x)
            | Op::Exp(x)
            | Op::Log(x)
            | Op::Sqrt(x)
            | Op::Tanh(x)
            | Op::Sigmoid(x)
            | Op::Relu(x)
            | Op::Silu(x)
            | Op::Gelu(x)
            | Op::Abs(x)
            | Op::Powf(x, _)
            | Op::Clamp(x, _, _)
            | Op::Affine(x, _, _)
            | Op::Sum { x, .. }
            | Op::Max { x, .. }
            | Op::Reshape(x)
            | Op::Permute(x, _)
            | Op::Narrow { x, .. }
            | Op::BroadcastTo(x)
            | Op::Copy(x)
            | Op::UpsampleNearest2d { x, .. }
            | Op::Attention { qkv: x, .. }
            | Op::IndexSelect { x, .. }
            | Op::Gather { x, .. } => vec![x],
            Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) | Op::Div(a, b) | Op::Maximum(a, b) | Op::Matmul(a, b) => {
                vec![a, b]
            }
            Op::Cat { xs, .. } => xs.iter().collect(),
            Op::Conv2d { x, weight, bias, .. } => {
                let mut v = vec![x, weight];
                v.extend(bias.iter());
                v
            }
            Op::GroupNorm { x, weight, bias, .. } => vec![x, weight, bias],
            Op::Where { mask, a, b } => vec![mask, a, b],
        }
    }
}
