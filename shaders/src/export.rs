//! Export and import of a model in the Hugging Face BLOOM layout: a directory holding
//! `model.safetensors` and `config.json` that `BloomForCausalLM.from_pretrained(dir)` loads.
//!
//! The tensors are the ones of [`Params::index`] with the `transformer.` prefix of
//! `BloomForCausalLM` (whose `transformer` is a `BloomModel`), e.g.
//! `transformer.word_embeddings.weight` or `transformer.h.0.self_attention.query_key_value.weight`,
//! stored as little-endian `F32` with the index's shapes (`[out, in]` for linear weights, as
//! in `torch.nn.Linear`). Canopy's fused QKV already has BLOOM's `[heads, 3, head_dim]` row
//! order, so export is a renaming, not a permutation. The LM head is tied to the word
//! embeddings (`tie_word_embeddings: true`), so `lm_head.weight` is not written; Hugging Face
//! ties it on load. The file's `__metadata__` is `{"format": "pt"}`, which `transformers`
//! checks for.
//!
//! `config.json` holds `BloomConfig`'s keys (see [`config_json`]), with `bos_token_id`,
//! `eos_token_id` and `pad_token_id` set to Canopy's special tokens ([`crate::tokens`]), plus
//! one key of Canopy's own, `canopy_seq_len`, the sequence length the model was trained on
//! (BLOOM's config has no such key, as ALiBi sets no position limit; `transformers` keeps
//! unknown keys as plain attributes and ignores them).
//!
//! [`import`] reads both back and checks every name, dtype and shape against the config;
//! every failure is a typed [`ExportError`], and the files' sizes are checked before they are
//! read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};
use serde_json::{Map, Value, json};

use crate::error::ShaderError;
use crate::model::config::{INIT_STD, LAYERNORM_EPS, ModelConfig};
use crate::model::params::Params;
use crate::tokens::{BOS_ID, EOS_ID, PAD_ID, in_vocab};

/// Name of the weights file in an exported directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Name of the configuration file in an exported directory.
pub const CONFIG_FILE: &str = "config.json";

/// Prefix of every tensor name: `BloomForCausalLM` keeps its `BloomModel` in `transformer`.
pub const PREFIX: &str = "transformer.";

/// The sequence length [`parse_config`] assumes when `canopy_seq_len` is absent (a
/// configuration not written by Canopy): 2048, the length BLOOM was trained with.
pub const DEFAULT_SEQ_LEN: usize = 2048;

/// Name of the LM head in `BloomForCausalLM`; accepted on import only when it equals the
/// word embeddings (Canopy's head is tied).
pub const LM_HEAD: &str = "lm_head.weight";

/// The largest `config.json` that [`import`] reads.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Slack for the safetensors header (JSON with one entry per tensor) over the tensor data.
const MAX_HEADER_BYTES: u64 = 16 << 20;

/// Errors of [`export`] and [`import`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading or writing a file failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done ("reading", "writing", "creating directory").
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than a model of its configuration can need.
    #[error("{path} is {len} bytes, more than the {max} bytes it may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The most it may have.
        max: u64,
    },
    /// `config.json` is not JSON.
    #[error("{path} is not valid JSON")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// `config.json` lacks a key, or holds a value Canopy's model cannot take.
    #[error("config.json: {key}: {reason}")]
    BadConfig {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The safetensors file is malformed (header, offsets, truncated data).
    #[error("{path} is not a valid safetensors file")]
    SafeTensors {
        /// The file.
        path: PathBuf,
        /// The safetensors crate's error.
        #[source]
        source: SafeTensorError,
    },
    /// A tensor the configuration needs is not in the file.
    #[error("tensor {name} is missing")]
    MissingTensor {
        /// Its full name (with the prefix).
        name: String,
    },
    /// The file holds a tensor that a BLOOM model of this configuration does not have.
    #[error("tensor {name} is not part of a BLOOM model of this configuration")]
    UnknownTensor {
        /// Its name in the file.
        name: String,
    },
    /// A tensor has another shape than the configuration implies.
    #[error("tensor {name} has shape {shape:?}, expected {expected:?}")]
    WrongShape {
        /// Its full name.
        name: String,
        /// Its shape in the file.
        shape: Vec<usize>,
        /// The shape the configuration implies.
        expected: Vec<usize>,
    },
    /// A tensor is not `F32`.
    #[error("tensor {name} has dtype {dtype}, expected F32")]
    WrongDtype {
        /// Its full name.
        name: String,
        /// Its dtype in the file.
        dtype: String,
    },
    /// The file has an `lm_head.weight` that differs from the word embeddings.
    #[error("lm_head.weight differs from the word embeddings, but Canopy's LM head is tied")]
    UntiedHead,
    /// The parameters to export are not a valid model.
    #[error("invalid model")]
    Model(#[source] ShaderError),
}

/// The result type of this module.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;

/// The `config.json` of a model of this size: `BloomConfig`'s keys (sorted, as
/// `transformers` writes them).
///
/// | key | value |
/// | --- | --- |
/// | `architectures` | `["BloomForCausalLM"]` |
/// | `model_type` | `"bloom"` |
/// | `vocab_size`, `hidden_size`, `n_layer`, `n_head` | from `config` |
/// | `canopy_seq_len` | `config.seq_len` (Canopy's own key, not BLOOM's) |
/// | `layer_norm_epsilon` | `1e-5` ([`LAYERNORM_EPS`]) |
/// | `initializer_range` | `0.02` ([`INIT_STD`]) |
/// | `apply_residual_connection_post_layernorm` | `false` (pre-LN blocks) |
/// | `hidden_dropout`, `attention_dropout` | `0.0` |
/// | `use_cache` | `true` |
/// | `bos_token_id`, `eos_token_id`, `pad_token_id` | 256, 257, 258 ([`crate::tokens`]), `null` if the vocabulary stops before |
/// | `tie_word_embeddings` | `true` |
/// | `slow_but_exact` | `false` |
/// | `pretraining_tp` | `1` |
/// | `torch_dtype` | `"float32"` |
pub fn config_json(config: &ModelConfig) -> Value {
    let token = |id| in_vocab(id, config.vocab).map_or(Value::Null, |id| json!(id));
    json!({
        "apply_residual_connection_post_layernorm": false,
        "architectures": ["BloomForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": token(BOS_ID),
        "canopy_seq_len": config.seq_len,
        "eos_token_id": token(EOS_ID),
        "hidden_dropout": 0.0,
        "hidden_size": config.hidden,
        "initializer_range": shortest_f64(INIT_STD),
        "layer_norm_epsilon": shortest_f64(LAYERNORM_EPS),
        "model_type": "bloom",
        "n_head": config.heads,
        "n_layer": config.layers,
        "pad_token_id": token(PAD_ID),
        "pretraining_tp": 1,
        "slow_but_exact": false,
        "tie_word_embeddings": true,
        "torch_dtype": "float32",
        "use_cache": true,
        "vocab_size": config.vocab,
    })
}

/// The f64 with `x`'s shortest decimal form (`1e-5`, not `9.99999974738e-6`).
fn shortest_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// Writes `params` into `dir` (created if missing) as `model.safetensors` and
/// `config.json`. Each file is written under a temporary name and renamed into place, so a
/// crash leaves either the old file or the new one.
pub fn export(params: &Params, dir: &Path) -> Result<()> {
    let config = params.config();
    config.validate().map_err(ExportError::Model)?;
    fs::create_dir_all(dir).map_err(io("creating directory", dir))?;

    let tensors: Vec<(String, F32Tensor<'_>)> = params
        .index()
        .iter()
        .map(|info| {
            let tensor = F32Tensor {
                shape: info.shape.clone(),
                values: &params.values()[info.range()],
            };
            (format!("{PREFIX}{}", info.name), tensor)
        })
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = dir.join(WEIGHTS_FILE);
    let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
    safetensors::serialize_to_file(tensors, Some(metadata), &tmp).map_err(
        |source| match source {
            SafeTensorError::IoError(source) => ExportError::Io {
                op: "writing",
                path: tmp.clone(),
                source,
            },
            source => ExportError::SafeTensors {
                path: tmp.clone(),
                source,
            },
        },
    )?;
    fs::rename(&tmp, &weights).map_err(io("renaming into place", &weights))?;

    let mut text =
        serde_json::to_string_pretty(&config_json(config)).map_err(|source| ExportError::Json {
            path: dir.join(CONFIG_FILE),
            source,
        })?;
    text.push('\n');
    write_atomically(&dir.join(CONFIG_FILE), text.as_bytes())
}

/// Reads a model exported by [`export`] (or any `BloomForCausalLM` checkpoint in `F32` whose
/// configuration Canopy's model can run) from `dir`, checking every tensor's name, dtype and
/// shape against `config.json`.
pub fn import(dir: &Path) -> Result<Params> {
    let config = read_config(&dir.join(CONFIG_FILE))?;
    let path = dir.join(WEIGHTS_FILE);
    let n = config.num_params() as u64;
    let head = (config.vocab * config.hidden) as u64;
    let max = 8 + MAX_HEADER_BYTES + 4 * (n + head);
    let bytes = read_limited(&path, max)?;
    let file = SafeTensors::deserialize(&bytes).map_err(|source| ExportError::SafeTensors {
        path: path.clone(),
        source,
    })?;

    let mut params = Params::zeros(&config).map_err(ExportError::Model)?;
    let positions: HashMap<String, usize> = params
        .index()
        .iter()
        .enumerate()
        .map(|(i, info)| (format!("{PREFIX}{}", info.name), i))
        .collect();
    let mut seen = vec![false; positions.len()];
    let mut head_values = None;
    let mut names = file.names();
    names.sort_unstable();
    for name in names {
        let view = file
            .tensor(name)
            .map_err(|source| ExportError::SafeTensors {
                path: path.clone(),
                source,
            })?;
        let (range, expected) = if name == LM_HEAD {
            (None, vec![config.vocab, config.hidden])
        } else {
            let i = *positions
                .get(name)
                .ok_or_else(|| ExportError::UnknownTensor { name: name.into() })?;
            seen[i] = true;
            let info = &params.index()[i];
            (Some(info.range()), info.shape.clone())
        };
        if view.dtype() != Dtype::F32 {
            return Err(ExportError::WrongDtype {
                name: name.into(),
                dtype: format!("{:?}", view.dtype()),
            });
        }
        if view.shape() != expected.as_slice() {
            return Err(ExportError::WrongShape {
                name: name.into(),
                shape: view.shape().to_vec(),
                expected,
            });
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        match range {
            Some(range) => {
                for (dst, v) in params.values_mut()[range].iter_mut().zip(values) {
                    *dst = v;
                }
            }
            None => head_values = Some(view.data()),
        }
    }
    if let Some(i) = seen.iter().position(|&s| !s) {
        return Err(ExportError::MissingTensor {
            name: format!("{PREFIX}{}", params.index()[i].name),
        });
    }
    if let Some(head) = head_values {
        let embeddings = params
            .index()
            .first()
            .map(|info| &params.values()[info.range()])
            .unwrap_or_default();
        let same = head
            .chunks_exact(4)
            .zip(embeddings)
            .all(|(b, e)| b == e.to_le_bytes());
        if !same {
            return Err(ExportError::UntiedHead);
        }
    }
    Ok(params)
}

/// Reads `config.json` into a [`ModelConfig`], accepting `transformers`' aliases
/// (`n_embed`, `num_attention_heads`, `num_hidden_layers`), taking [`DEFAULT_SEQ_LEN`] when
/// `canopy_seq_len` is absent, and refusing settings Canopy's model does not implement.
pub fn read_config(path: &Path) -> Result<ModelConfig> {
    let bytes = read_limited(path, MAX_CONFIG_BYTES)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|source| ExportError::Json {
        path: path.into(),
        source,
    })?;
    parse_config(&value)
}

/// [`read_config`] on parsed JSON.
pub fn parse_config(value: &Value) -> Result<ModelConfig> {
    let obj = value
        .as_object()
        .ok_or_else(|| bad("(top level)", "must be a JSON object"))?;
    match obj.get("model_type").and_then(Value::as_str) {
        Some("bloom") => {}
        other => {
            return Err(bad(
                "model_type",
                format!("must be \"bloom\", found {other:?}"),
            ));
        }
    }
    if let Some(archs) = obj.get("architectures") {
        let ok = archs
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some("BloomForCausalLM")));
        if !ok {
            return Err(bad("architectures", "must list \"BloomForCausalLM\""));
        }
    }
    let config = ModelConfig {
        vocab: size(obj, &["vocab_size"])?,
        hidden: size(obj, &["hidden_size", "n_embed"])?,
        layers: size(obj, &["n_layer", "num_hidden_layers"])?,
        heads: size(obj, &["n_head", "num_attention_heads"])?,
        seq_len: match obj.get("canopy_seq_len") {
            Some(_) => size(obj, &["canopy_seq_len"])?,
            None => DEFAULT_SEQ_LEN,
        },
    };
    if let Some(eps) = obj.get("layer_norm_epsilon") {
        // Compared in f32, the precision the model computes in.
        if eps.as_f64().map(|e| e as f32) != Some(LAYERNORM_EPS) {
            return Err(bad(
                "layer_norm_epsilon",
                format!("must be {LAYERNORM_EPS}, found {eps}"),
            ));
        }
    }
    for (key, wanted) in [
        ("apply_residual_connection_post_layernorm", false),
        ("tie_word_embeddings", true),
    ] {
        if let Some(v) = obj.get(key)
            && v.as_bool() != Some(wanted)
        {
            return Err(bad(key, format!("must be {wanted}, found {v}")));
        }
    }
    config.validate().map_err(|e| match e {
        ShaderError::Parameter {
            name,
            value,
            reason,
        } => bad(name, format!("{value}: {reason}")),
        other => ExportError::Model(other),
    })?;
    Ok(config)
}

/// The first of `keys` present in `obj`, as a size.
fn size(obj: &Map<String, Value>, keys: &[&str]) -> Result<usize> {
    let (key, value) = keys
        .iter()
        .find_map(|k| obj.get(*k).map(|v| (*k, v)))
        .ok_or_else(|| bad(keys.join(" or "), "missing"))?;
    value
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| {
            bad(
                key,
                format!("must be a non-negative integer, found {value}"),
            )
        })
}

fn bad(key: impl Into<String>, reason: impl Into<String>) -> ExportError {
    ExportError::BadConfig {
        key: key.into(),
        reason: reason.into(),
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + use<> {
    let path = path.to_path_buf();
    move |source| ExportError::Io { op, path, source }
}

/// Reads `path` after checking that it has at most `max` bytes.
fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>> {
    let len = fs::metadata(path).map_err(io("reading", path))?.len();
    if len > max {
        return Err(ExportError::TooLarge {
            path: path.into(),
            len,
            max,
        });
    }
    fs::read(path).map_err(io("reading", path))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io("renaming into place", path))
}

/// A borrowed `f32` tensor as safetensors sees it.
struct F32Tensor<'a> {
    shape: Vec<usize>,
    values: &'a [f32],
}

impl View for F32Tensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(self.values))
        } else {
            Cow::Owned(self.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
    }

    fn data_len(&self) -> usize {
        self.values.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rng, small_config as config, uniform};

    /// Random values everywhere (including the LayerNorms), plus the special bit patterns
    /// that must survive: -0.0, infinities, a NaN with a payload, a subnormal.
    fn params() -> Params {
        let c = config();
        let mut values = uniform(&mut rng(5), c.num_params(), 2.0);
        values[..5].copy_from_slice(&[
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::from_bits(0x7fc0_1234),
            f32::from_bits(1),
        ]);
        Params::from_values(&c, values).unwrap()
    }

    fn bits(p: &Params) -> Vec<u32> {
        p.values().iter().map(|v| v.to_bits()).collect()
    }

    /// Writes a safetensors file of `tensors` (name, dtype, shape, bytes) into `dir`.
    fn write_tensors(dir: &Path, tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>) {
        let views: Vec<_> = tensors
            .iter()
            .map(|(name, dtype, shape, data)| {
                (
                    name.clone(),
                    safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(WEIGHTS_FILE)).unwrap();
    }

    /// The exported tensors of `params()` as (name, dtype, shape, bytes).
    fn exported(p: &Params) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
        p.index()
            .iter()
            .map(|t| {
                let bytes = p.values()[t.range()]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                (
                    format!("{PREFIX}{}", t.name),
                    Dtype::F32,
                    t.shape.clone(),
                    bytes,
                )
            })
            .collect()
    }

    #[test]
    fn export_then_import_is_bit_identical() {
        let dir = tempfile::tempdir().unwrap();
        let p = params();
        export(&p, dir.path()).unwrap();
        let back = import(dir.path()).unwrap();
        assert_eq!(back.config(), p.config());
        assert_eq!(bits(&back), bits(&p));

        // The file uses BloomForCausalLM's names and no LM head of its own.
        let bytes = fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let mut names = file.names();
        names.sort_unstable();
        assert_eq!(names.len(), 5 + 2 * 12);
        for name in [
            "transformer.word_embeddings.weight",
            "transformer.word_embeddings_layernorm.weight",
            "transformer.word_embeddings_layernorm.bias",
            "transformer.h.0.input_layernorm.weight",
            "transformer.h.1.self_attention.query_key_value.weight",
            "transformer.h.1.self_attention.dense.bias",
            "transformer.h.0.post_attention_layernorm.bias",
            "transformer.h.1.mlp.dense_h_to_4h.weight",
            "transformer.h.1.mlp.dense_4h_to_h.bias",
            "transformer.ln_f.weight",
            "transformer.ln_f.bias",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        assert!(!names.contains(&LM_HEAD));
        let qkv = file
            .tensor("transformer.h.0.self_attention.query_key_value.weight")
            .unwrap();
        assert_eq!(qkv.dtype(), Dtype::F32);
        assert_eq!(qkv.shape(), [48, 16]);
        // `transformers` refuses safetensors files without this metadata.
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(
            meta.metadata().as_ref().and_then(|m| m.get("format")),
            Some(&"pt".to_string())
        );
        // No temporary files are left behind.
        let mut files: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, [CONFIG_FILE, WEIGHTS_FILE]);
    }

    /// The exact `config.json` of the tiny preset, so a change to it is a decision.
    #[test]
    fn config_json_has_blooms_keys() {
        let text = serde_json::to_string(&config_json(&ModelConfig::tiny())).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"apply_residual_connection_post_layernorm":false,"#,
                r#""architectures":["BloomForCausalLM"],"attention_dropout":0.0,"#,
                r#""bos_token_id":256,"canopy_seq_len":128,"eos_token_id":257,"#,
                r#""hidden_dropout":0.0,"#,
                r#""hidden_size":128,"initializer_range":0.02,"layer_norm_epsilon":0.00001,"#,
                r#""model_type":"bloom","n_head":4,"n_layer":4,"pad_token_id":258,"#,
                r#""pretraining_tp":1,"slow_but_exact":false,"#,
                r#""tie_word_embeddings":true,"torch_dtype":"float32","use_cache":true,"#,
                r#""vocab_size":260}"#
            )
        );
        assert_eq!(
            parse_config(&config_json(&ModelConfig::tiny())).unwrap(),
            ModelConfig::tiny()
        );
        // A vocabulary of bytes only has no special tokens.
        let bytes_only = ModelConfig {
            vocab: 256,
            ..ModelConfig::tiny()
        };
        let v = config_json(&bytes_only);
        assert_eq!(v["bos_token_id"], Value::Null);
        assert_eq!(v["pad_token_id"], Value::Null);
        // transformers' aliases are read too.
        let mut aliased = config_json(&ModelConfig::tiny());
        let obj = aliased.as_object_mut().unwrap();
        let hidden = obj.remove("hidden_size").unwrap();
        obj.insert("n_embed".into(), hidden);
        let heads = obj.remove("n_head").unwrap();
        obj.insert("num_attention_heads".into(), heads);
        assert_eq!(parse_config(&aliased).unwrap(), ModelConfig::tiny());
    }

    #[test]
    fn bad_configs_name_the_key() {
        let base = config_json(&config());
        let cases: [(&str, Value, &str); 8] = [
            ("model_type", json!("gpt2"), "model_type"),
            ("architectures", json!(["GPT2LMHeadModel"]), "architectures"),
            ("hidden_size", json!(-3), "hidden_size"),
            ("n_head", json!(3), "hidden"),
            ("layer_norm_epsilon", json!(1e-6), "layer_norm_epsilon"),
            (
                "apply_residual_connection_post_layernorm",
                json!(true),
                "apply_residual_connection_post_layernorm",
            ),
            ("tie_word_embeddings", json!(false), "tie_word_embeddings"),
            ("vocab_size", json!(100), "vocab"),
        ];
        for (key, value, named) in cases {
            let mut v = base.clone();
            v[key] = value;
            match parse_config(&v) {
                Err(ExportError::BadConfig { key: got, .. }) => assert_eq!(got, named, "{key}"),
                other => panic!("{key}: {other:?}"),
            }
        }
        let mut v = base.clone();
        v["canopy_seq_len"] = json!("long");
        assert!(matches!(
            parse_config(&v),
            Err(ExportError::BadConfig { key, .. }) if key == "canopy_seq_len"
        ));
        v.as_object_mut().unwrap().remove("canopy_seq_len");
        assert_eq!(parse_config(&v).unwrap().seq_len, DEFAULT_SEQ_LEN);
        v.as_object_mut().unwrap().remove("vocab_size");
        assert!(matches!(
            parse_config(&v),
            Err(ExportError::BadConfig { key, .. }) if key == "vocab_size"
        ));
        assert!(matches!(
            parse_config(&json!([1, 2])),
            Err(ExportError::BadConfig { .. })
        ));

        // On disk: not JSON at all, and no file.
        let dir = tempfile::tempdir().unwrap();
        export(&params(), dir.path()).unwrap();
        fs::write(dir.path().join(CONFIG_FILE), "{ not json").unwrap();
        assert!(matches!(import(dir.path()), Err(ExportError::Json { .. })));
        fs::remove_file(dir.path().join(CONFIG_FILE)).unwrap();
        assert!(matches!(
            import(dir.path()),
            Err(ExportError::Io { op: "reading", .. })
        ));
    }

    #[test]
    fn mismatched_tensors_get_typed_errors() {
        let p = params();
        let dir = tempfile::tempdir().unwrap();
        export(&p, dir.path()).unwrap();
        let good = exported(&p);
        let qkv = "transformer.h.1.self_attention.query_key_value.weight";

        // A missing tensor.
        let mut t = good.clone();
        t.retain(|(name, ..)| name != "transformer.ln_f.bias");
        write_tensors(dir.path(), t);
        match import(dir.path()) {
            Err(ExportError::MissingTensor { name }) => assert_eq!(name, "transformer.ln_f.bias"),
            other => panic!("{other:?}"),
        }

        // A transposed QKV weight.
        let mut t = good.clone();
        t.iter_mut().find(|(n, ..)| n == qkv).unwrap().2 = vec![16, 48];
        write_tensors(dir.path(), t);
        match import(dir.path()) {
            Err(ExportError::WrongShape {
                name,
                shape,
                expected,
            }) => {
                assert_eq!(name, qkv);
                assert_eq!((shape, expected), (vec![16, 48], vec![48, 16]));
            }
            other => panic!("{other:?}"),
        }

        // A half-precision tensor.
        let mut t = good.clone();
        let entry = t.iter_mut().find(|(n, ..)| n == qkv).unwrap();
        entry.1 = Dtype::F16;
        entry.3.truncate(entry.3.len() / 2);
        write_tensors(dir.path(), t);
        match import(dir.path()) {
            Err(ExportError::WrongDtype { name, dtype }) => {
                assert_eq!(name, qkv);
                assert_eq!(dtype, "F16");
            }
            other => panic!("{other:?}"),
        }

        // A tensor of a third layer, and one without the prefix.
        for extra in ["transformer.h.2.ln_f.weight", "ln_f.weight"] {
            let mut t = good.clone();
            t.push((extra.into(), Dtype::F32, vec![16], vec![0; 64]));
            write_tensors(dir.path(), t);
            match import(dir.path()) {
                Err(ExportError::UnknownTensor { name }) => assert_eq!(name, extra),
                other => panic!("{other:?}"),
            }
        }

        // A config with more layers than the file has.
        let mut more = config_json(&config());
        more["n_layer"] = json!(3);
        fs::write(dir.path().join(CONFIG_FILE), more.to_string()).unwrap();
        write_tensors(dir.path(), good.clone());
        match import(dir.path()) {
            Err(ExportError::MissingTensor { name }) => {
                assert_eq!(name, "transformer.h.2.input_layernorm.weight")
            }
            other => panic!("{other:?}"),
        }
        export(&p, dir.path()).unwrap();

        // An LM head: accepted when tied, refused when not.
        let embeddings = good[0].3.clone();
        let mut t = good.clone();
        t.push((
            LM_HEAD.into(),
            Dtype::F32,
            vec![260, 16],
            embeddings.clone(),
        ));
        write_tensors(dir.path(), t);
        assert_eq!(bits(&import(dir.path()).unwrap()), bits(&p));
        let mut untied = embeddings;
        untied[100] ^= 1;
        let mut t = good.clone();
        t.push((LM_HEAD.into(), Dtype::F32, vec![260, 16], untied));
        write_tensors(dir.path(), t);
        assert!(matches!(import(dir.path()), Err(ExportError::UntiedHead)));
    }

    #[test]
    fn corrupted_files_are_refused() {
        let p = params();
        let dir = tempfile::tempdir().unwrap();
        export(&p, dir.path()).unwrap();
        let path = dir.path().join(WEIGHTS_FILE);
        let bytes = fs::read(&path).unwrap();

        // Truncated data.
        fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        assert!(matches!(
            import(dir.path()),
            Err(ExportError::SafeTensors { .. })
        ));
        // A header length pointing past the end.
        let mut bad = bytes.clone();
        bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        fs::write(&path, &bad).unwrap();
        assert!(matches!(
            import(dir.path()),
            Err(ExportError::SafeTensors { .. })
        ));
        // Garbage in the header.
        let mut bad = bytes.clone();
        bad[8] = b'x';
        fs::write(&path, &bad).unwrap();
        assert!(matches!(
            import(dir.path()),
            Err(ExportError::SafeTensors { .. })
        ));
        // Far larger than the configuration allows: refused before reading.
        let file = fs::File::options().append(true).open(&path).unwrap();
        file.set_len(64 << 20).unwrap();
        assert!(matches!(
            import(dir.path()),
            Err(ExportError::TooLarge { .. })
        ));
        // A flipped bit in the data changes the weights but not the layout: it imports, and
        // differs from the original in exactly that value (integrity is the chunk hashes' job).
        let mut flipped = bytes;
        let last = flipped.len() - 1;
        flipped[last] ^= 0x80;
        fs::write(&path, &flipped).unwrap();
        let back = import(dir.path()).unwrap();
        let diff = bits(&back)
            .iter()
            .zip(bits(&p))
            .filter(|(a, b)| *a != b)
            .count();
        assert_eq!(diff, 1);
    }
}
