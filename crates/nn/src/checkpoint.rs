//! Training checkpoints: the model's weights, the EMA weights, the optimizer state
//! and a metadata entry (the config and the step), in one safetensors file.
//!
//! Tensor names carry a prefix per part: `model.<param>`, `ema.<param>` and
//! `optim.<state>` (e.g. `optim.exp_avg.down.0.res.0.conv1.weight`). Metadata is a
//! string map; the program stores its config as JSON under `config` and the step
//! under `step`. Files are written to a temporary file and renamed, so an
//! interrupted save never leaves half a checkpoint; the Python `safetensors`
//! package opens them.

use crate::error::{Error, Result};
use crate::safetensors::{NamedTensor, SafeTensors, TensorData};
use std::collections::BTreeMap;
use std::path::Path;
use tensor::{Float, Tensor};

/// The parts of a checkpoint, each a list of named tensors in a stable order.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint<T: Float> {
    /// The raw (trained) weights.
    pub model: Vec<(String, Tensor<T>)>,
    /// The exponential moving average of the weights, if kept.
    pub ema: Vec<(String, Tensor<T>)>,
    /// The optimizer's state (`step`, moment estimates...).
    pub optimizer: Vec<(String, Tensor<T>)>,
    /// Free-form strings: `config` (JSON), `step`, ...
    pub metadata: BTreeMap<String, String>,
}

const PARTS: [&str; 3] = ["model", "ema", "optim"];

fn to_named<T: Float>(prefix: &str, name: &str, t: &Tensor<T>) -> NamedTensor {
    let data = if T::DTYPE == "F64" { TensorData::F64(t.cast::<f64>().to_vec()) } else { TensorData::F32(t.cast::<f32>().to_vec()) };
    NamedTensor { name: format!("{prefix}.{name}"), shape: t.dims().to_vec(), data }
}

fn from_named<T: Float>(t: &NamedTensor) -> Result<Tensor<T>> {
    let values: Vec<T> = match &t.data {
        TensorData::F32(v) => v.iter().map(|&x| T::from_f64(f64::from(x))).collect(),
        TensorData::F64(v) => v.iter().map(|&x| T::from_f64(x)).collect(),
    };
    Ok(Tensor::from_vec(values, &t.shape)?)
}

impl<T: Float> Checkpoint<T> {
    /// The checkpoint as a safetensors document.
    #[must_use]
    pub fn to_safetensors(&self) -> SafeTensors {
        let parts = [&self.model, &self.ema, &self.optimizer];
        let tensors =
            PARTS.iter().zip(parts).flat_map(|(prefix, named)| named.iter().map(move |(name, t)| to_named(prefix, name, t))).collect();
        SafeTensors { tensors, metadata: self.metadata.clone() }
    }

    /// Splits a safetensors document into the parts by their name prefix.
    ///
    /// # Errors
    /// [`Error::Format`] naming the tensor when a name has no known prefix.
    pub fn from_safetensors(st: &SafeTensors, source: &str) -> Result<Self> {
        let mut ckpt = Checkpoint { metadata: st.metadata.clone(), ..Checkpoint::default() };
        for t in &st.tensors {
            let (prefix, name) = t.name.split_once('.').unwrap_or(("", &t.name));
            let part = match prefix {
                "model" => &mut ckpt.model,
                "ema" => &mut ckpt.ema,
                "optim" => &mut ckpt.optimizer,
                _ => {
                    return Err(Error::Format {
                        file: source.to_string(),
                        tensor: Some(t.name.clone()),
                        offset: None,
                        reason: format!("the name does not start with one of {PARTS:?}"),
                    })
                }
            };
            part.push((name.to_string(), from_named(t)?));
        }
        Ok(ckpt)
    }

    /// Writes the checkpoint atomically (temporary file, then rename), creating
    /// the folder if needed.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        }
        self.to_safetensors().save(path)
    }

    /// Reads a checkpoint, checking the format (see [`SafeTensors::load`]).
    ///
    /// # Errors
    /// I/O and format errors naming the file, the tensor and the offset.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_safetensors(&SafeTensors::load(path)?, &path.display().to_string())
    }

    /// A metadata value, or a format error naming the missing key.
    ///
    /// # Errors
    /// [`Error::Format`] when the key is absent.
    pub fn metadata_value(&self, key: &str, source: &str) -> Result<&str> {
        self.metadata.get(key).map(String::as_str).ok_or_else(|| Error::Format {
            file: source.to_string(),
            tensor: None,
            offset: None,
            reason: format!("no metadata entry {key:?}: not a checkpoint of this program"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Adam, Ema, Module, Optimizer, UNet, UNetConfig};
    use tensor::rng;

    #[test]
    fn save_load_round_trip_is_bit_exact() {
        let mut r = rng(1);
        let mut model = UNet::<f32>::new(&UNetConfig::tiny(), &mut r).unwrap();
        let mut opt = Adam::adamw(1e-3, 0.01);
        let x = Tensor::randn(&[2, 1, 8, 8], &mut r);
        let grads = model.forward(&x, &[1, 7]).unwrap().sqr().mean_all().unwrap().backward().unwrap();
        opt.step(&mut model, &grads).unwrap();
        let ema = Ema::new(&model, 0.9);
        let ckpt = Checkpoint {
            model: model.named_params(),
            ema: ema.shadow.clone(),
            optimizer: opt.state_tensors(),
            metadata: BTreeMap::from([("step".to_string(), "1".to_string())]),
        };
        let dir = std::env::temp_dir().join(format!("nn-ckpt-{}", std::process::id()));
        let path = dir.join("c.safetensors");
        ckpt.save(&path).unwrap();
        let back = Checkpoint::<f32>::load(&path).unwrap();
        for (a, b) in [(&ckpt.model, &back.model), (&ckpt.ema, &back.ema), (&ckpt.optimizer, &back.optimizer)] {
            assert_eq!(a.len(), b.len());
            for ((na, ta), (nb, tb)) in a.iter().zip(b) {
                assert_eq!(na, nb);
                assert_eq!(ta.dims(), tb.dims());
                let bits = |t: &Tensor<f32>| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(ta), bits(tb), "{na}");
            }
        }
        assert_eq!(back.metadata_value("step", "c").unwrap(), "1");
        // The weights load into a fresh model of the same config...
        let mut fresh = UNet::<f32>::new(&UNetConfig::tiny(), &mut rng(2)).unwrap();
        fresh.load_named_params(&back.model).unwrap();
        assert_eq!(fresh.forward(&x, &[3, 4]).unwrap().to_vec(), model.forward(&x, &[3, 4]).unwrap().to_vec());
        // ...but not into a model of another config, with a message naming the parameter.
        let other = UNetConfig { base_channels: 16, ..UNetConfig::tiny() };
        let mut wrong = UNet::<f32>::new(&other, &mut rng(3)).unwrap();
        let err = wrong.load_named_params(&back.model).unwrap_err().to_string();
        assert!(err.contains("load_named_params") && err.contains("weight"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn each_precision_is_stored_as_itself() {
        // f32 weights are written as F32 (what PyTorch's twin loads) and f64 ones as F64,
        // so an f64 value that f32 cannot hold (0.1) comes back bit for bit.
        let tensor = |values: &[f64]| Tensor::<f64>::from_slice(values, &[values.len()]).unwrap();
        let ckpt64 = Checkpoint::<f64> { model: vec![("w".into(), tensor(&[0.1, -1.0 / 3.0]))], ..Checkpoint::default() };
        let st = ckpt64.to_safetensors();
        assert!(matches!(&st.tensors[0].data, TensorData::F64(v) if v == &[0.1, -1.0 / 3.0]));
        let back = Checkpoint::<f64>::from_safetensors(&st, "c").unwrap();
        assert_eq!(back.model[0].1.to_vec(), [0.1, -1.0 / 3.0]);
        let ckpt32 = Checkpoint::<f32> { model: vec![("w".into(), Tensor::from_slice(&[0.1f32], &[1]).unwrap())], ..Checkpoint::default() };
        assert!(matches!(&ckpt32.to_safetensors().tensors[0].data, TensorData::F32(v) if v == &[0.1f32]));
    }

    #[test]
    fn unknown_prefix_is_an_error_naming_the_tensor() {
        let st = SafeTensors {
            tensors: vec![NamedTensor { name: "weights.w".into(), shape: vec![1], data: TensorData::F32(vec![1.0]) }],
            metadata: BTreeMap::new(),
        };
        let err = Checkpoint::<f32>::from_safetensors(&st, "x.safetensors").unwrap_err().to_string();
        assert!(err.contains("x.safetensors") && err.contains("weights.w"), "{err}");
    }
}
