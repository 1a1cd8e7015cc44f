//! The registry of every kernel Canopy ships: its WGSL ([`Kernel`]), and its trait in
//! [`Backend`], the one list of what a backend runs.
//!
//! A kernel is a WGSL entry point compiled into this binary with `include_str!` and its explicit
//! bind-group layout; its documentation names the CPU reference it is tested against. Nothing
//! else ever runs on a GPU: no function in this crate takes shader source, so a node runs only
//! what it shipped with (a rule of the design: code and shaders never come over the network).
//!
//! Tests validate every registered kernel with naga (with the capabilities the runtime
//! requests: none beyond WebGPU's defaults) and fail if a `.wgsl` file in `wgsl/` is not
//! registered.

use crate::backend::Buffers;
use crate::kernels::adamw::AdamWOps;
use crate::kernels::attention::AttentionOps;
use crate::kernels::bias::BiasOps;
use crate::kernels::cross_entropy::CrossEntropyOps;
use crate::kernels::embedding::EmbeddingOps;
use crate::kernels::gelu::GeluOps;
use crate::kernels::int8::Int8Ops;
use crate::kernels::layernorm::LayerNormOps;
use crate::kernels::matmul::MatmulOps;
use crate::kernels::minhash::MinHashOps;
use crate::kernels::norm::NormOps;
use crate::kernels::quality::QualityOps;

/// Defines [`Backend`] as [`Buffers`] plus the kernel traits listed, with its blanket impl:
/// the list is written once.
macro_rules! backend_of {
    ($($kernel:ident),+ $(,)?) => {
        /// Every kernel, on one backend: buffers ([`Buffers`]) and each kernel's trait, which
        /// its file under `kernels/` defines and implements for the CPU and the wgpu paths.
        /// Code written against `Backend` runs on either path, and the tests are written that
        /// way too: once, then instantiated for both.
        pub trait Backend: Buffers $(+ $kernel)+ {}

        impl<B> Backend for B where B: Buffers $(+ $kernel)+ {}
    };
}

backend_of!(
    MatmulOps,
    BiasOps,
    GeluOps,
    LayerNormOps,
    EmbeddingOps,
    CrossEntropyOps,
    AdamWOps,
    NormOps,
    Int8Ops,
    AttentionOps,
    QualityOps,
    MinHashOps,
);

/// How a kernel sees one binding of its bind group (all in group 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingKind {
    /// The kernel's parameters, a uniform buffer.
    Uniform,
    /// A storage buffer the kernel only reads.
    Read,
    /// A storage buffer the kernel writes (and may read).
    ReadWrite,
}

/// One binding of a kernel's bind group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The `@binding(n)` index in group 0.
    pub index: u32,
    /// How the kernel uses it.
    pub kind: BindingKind,
}

/// A shipped compute kernel.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    /// Unique name, `file.entry`; it also keys the pipeline cache.
    pub name: &'static str,
    /// The file under `wgsl/`, without the extension.
    pub file: &'static str,
    /// The WGSL source of that file.
    pub source: &'static str,
    /// The `@compute` entry point.
    pub entry: &'static str,
    /// The bind-group layout: the uniform (if any) first, then storage buffers in the order a
    /// launch passes them.
    pub bindings: &'static [Binding],
}

impl Kernel {
    /// Whether the kernel takes a uniform parameter block.
    pub fn has_params(&self) -> bool {
        self.bindings.iter().any(|b| b.kind == BindingKind::Uniform)
    }

    /// The number of storage buffers a launch passes.
    pub fn storage_count(&self) -> usize {
        self.bindings
            .iter()
            .filter(|b| b.kind != BindingKind::Uniform)
            .count()
    }
}

mod source {
    pub(super) const MATMUL: &str = include_str!("../wgsl/matmul.wgsl");
    pub(super) const BIAS: &str = include_str!("../wgsl/bias.wgsl");
    pub(super) const GELU: &str = include_str!("../wgsl/gelu.wgsl");
    pub(super) const LAYERNORM: &str = include_str!("../wgsl/layernorm.wgsl");
    pub(super) const LAYERNORM_BACKWARD: &str = include_str!("../wgsl/layernorm_backward.wgsl");
    pub(super) const EMBEDDING: &str = include_str!("../wgsl/embedding.wgsl");
    pub(super) const CROSS_ENTROPY: &str = include_str!("../wgsl/cross_entropy.wgsl");
    pub(super) const ADAMW: &str = include_str!("../wgsl/adamw.wgsl");
    pub(super) const NORM: &str = include_str!("../wgsl/norm.wgsl");
    pub(super) const INT8: &str = include_str!("../wgsl/int8.wgsl");
    pub(super) const ATTENTION: &str = include_str!("../wgsl/attention.wgsl");
    pub(super) const QUALITY: &str = include_str!("../wgsl/quality.wgsl");
    pub(super) const MINHASH: &str = include_str!("../wgsl/minhash.wgsl");
}

const fn u(index: u32) -> Binding {
    Binding {
        index,
        kind: BindingKind::Uniform,
    }
}

const fn r(index: u32) -> Binding {
    Binding {
        index,
        kind: BindingKind::Read,
    }
}

const fn w(index: u32) -> Binding {
    Binding {
        index,
        kind: BindingKind::ReadWrite,
    }
}

/// Tiled `C (+)= op(A) · op(B)`.
///
/// Tested against `canopy_shaders::kernels::matmul::matmul_reference`.
pub const MATMUL: Kernel = Kernel {
    name: "matmul.main",
    file: "matmul",
    source: source::MATMUL,
    entry: "main",
    bindings: &[u(0), r(1), r(2), w(3)],
};

/// `x[r, c] += bias[c]`.
///
/// Tested against `canopy_shaders::kernels::bias::bias_add_reference`.
pub const BIAS_ADD: Kernel = Kernel {
    name: "bias.add",
    file: "bias",
    source: source::BIAS,
    entry: "add",
    bindings: &[u(0), w(1), r(2)],
};

/// `dbias[c] = Σ_r dy[r, c]`.
///
/// Tested against `canopy_shaders::kernels::bias::bias_grad_reference`.
pub const BIAS_GRAD: Kernel = Kernel {
    name: "bias.grad",
    file: "bias",
    source: source::BIAS,
    entry: "grad",
    bindings: &[u(0), w(1), r(2)],
};

/// tanh-GELU forward.
///
/// Tested against `canopy_shaders::kernels::gelu::gelu_reference`.
pub const GELU_FORWARD: Kernel = Kernel {
    name: "gelu.forward",
    file: "gelu",
    source: source::GELU,
    entry: "forward",
    bindings: &[u(0), r(1), w(3)],
};

/// tanh-GELU backward.
///
/// Tested against `canopy_shaders::kernels::gelu::gelu_backward_reference`.
pub const GELU_BACKWARD: Kernel = Kernel {
    name: "gelu.backward",
    file: "gelu",
    source: source::GELU,
    entry: "backward",
    bindings: &[u(0), r(1), r(2), w(3)],
};

/// LayerNorm forward.
///
/// Tested against `canopy_shaders::kernels::layernorm::layernorm_reference`.
pub const LAYERNORM_FORWARD: Kernel = Kernel {
    name: "layernorm.forward",
    file: "layernorm",
    source: source::LAYERNORM,
    entry: "forward",
    bindings: &[u(0), r(1), r(2), r(3), w(4), w(5), w(6)],
};

/// LayerNorm backward, input gradient.
///
/// Tested against `canopy_shaders::kernels::layernorm::layernorm_backward_reference`.
pub const LAYERNORM_BACKWARD_INPUT: Kernel = Kernel {
    name: "layernorm_backward.input",
    file: "layernorm_backward",
    source: source::LAYERNORM_BACKWARD,
    entry: "input",
    bindings: &[u(0), r(1), r(2), r(3), r(4), r(5), w(6)],
};

/// LayerNorm backward, gamma and beta gradients.
///
/// Tested against `canopy_shaders::kernels::layernorm::layernorm_backward_reference`.
pub const LAYERNORM_BACKWARD_PARAMS: Kernel = Kernel {
    name: "layernorm_backward.params",
    file: "layernorm_backward",
    source: source::LAYERNORM_BACKWARD,
    entry: "params",
    bindings: &[u(0), r(1), r(3), r(4), r(5), w(7), w(8)],
};

/// Embedding gather.
///
/// Tested against `canopy_shaders::kernels::embedding::embedding_reference`.
pub const EMBEDDING_GATHER: Kernel = Kernel {
    name: "embedding.gather",
    file: "embedding",
    source: source::EMBEDDING,
    entry: "gather",
    bindings: &[u(0), r(1), r(2), w(3)],
};

/// Embedding scatter-add backward.
///
/// Tested against `canopy_shaders::kernels::embedding::embedding_backward_reference`.
pub const EMBEDDING_SCATTER: Kernel = Kernel {
    name: "embedding.scatter",
    file: "embedding",
    source: source::EMBEDDING,
    entry: "scatter",
    bindings: &[u(0), r(1), r(2), w(3)],
};

/// Softmax cross-entropy forward.
///
/// Tested against `canopy_shaders::kernels::cross_entropy::cross_entropy_reference`.
pub const CROSS_ENTROPY_FORWARD: Kernel = Kernel {
    name: "cross_entropy.forward",
    file: "cross_entropy",
    source: source::CROSS_ENTROPY,
    entry: "forward",
    bindings: &[u(0), r(1), r(2), w(3), w(4)],
};

/// Softmax cross-entropy backward.
///
/// Tested against `canopy_shaders::kernels::cross_entropy::cross_entropy_backward_reference`.
pub const CROSS_ENTROPY_BACKWARD: Kernel = Kernel {
    name: "cross_entropy.backward",
    file: "cross_entropy",
    source: source::CROSS_ENTROPY,
    entry: "backward",
    bindings: &[u(0), r(1), r(2), r(5), w(6)],
};

/// One AdamW step.
///
/// Tested against `canopy_shaders::kernels::adamw::adamw_reference`.
pub const ADAMW_STEP: Kernel = Kernel {
    name: "adamw.step",
    file: "adamw",
    source: source::ADAMW,
    entry: "step",
    bindings: &[u(0), w(1), r(2), w(3), w(4)],
};

/// Sum of squares, per-workgroup partial sums.
///
/// Tested against `canopy_shaders::kernels::norm::global_norm_reference`.
pub const NORM_PARTIAL: Kernel = Kernel {
    name: "norm.partial",
    file: "norm",
    source: source::NORM,
    entry: "partial",
    bindings: &[u(0), r(1), w(2)],
};

/// Sum of squares, the final sum of the partials.
///
/// Tested against `canopy_shaders::kernels::norm::global_norm_reference`.
pub const NORM_FINISH: Kernel = Kernel {
    name: "norm.finish",
    file: "norm",
    source: source::NORM,
    entry: "finish",
    bindings: &[u(0), w(2), w(3)],
};

/// Int8 codec: per-block scales.
///
/// Tested against `canopy_protocol::Compressor (CodecSpec::Int8)`.
pub const INT8_SCALES: Kernel = Kernel {
    name: "int8.scales",
    file: "int8",
    source: source::INT8,
    entry: "scales",
    bindings: &[u(0), r(1), w(2), w(3)],
};

/// Int8 codec: quantised bytes.
///
/// Tested against `canopy_protocol::Compressor (CodecSpec::Int8)`.
pub const INT8_QUANTIZE: Kernel = Kernel {
    name: "int8.quantize",
    file: "int8",
    source: source::INT8,
    entry: "quantize",
    bindings: &[u(0), r(1), r(4), r(5), w(6)],
};

/// Int8 codec: dequantisation.
///
/// Tested against `canopy_protocol::CompressedUpdate::decompress (CodecSpec::Int8)`.
pub const INT8_DEQUANTIZE: Kernel = Kernel {
    name: "int8.dequantize",
    file: "int8",
    source: source::INT8,
    entry: "dequantize",
    bindings: &[u(0), r(4), r(7), w(8)],
};

/// Causal ALiBi attention forward.
///
/// Tested against `canopy_shaders::kernels::attention::attention_reference`.
pub const ATTENTION_FORWARD: Kernel = Kernel {
    name: "attention.forward",
    file: "attention",
    source: source::ATTENTION,
    entry: "forward",
    bindings: &[u(0), r(1), r(2), w(3), w(4)],
};

/// Causal ALiBi attention backward, dq (and delta).
///
/// Tested against `canopy_shaders::kernels::attention::attention_backward_reference`.
pub const ATTENTION_BACKWARD_DQ: Kernel = Kernel {
    name: "attention.backward_dq",
    file: "attention",
    source: source::ATTENTION,
    entry: "backward_dq",
    bindings: &[u(0), r(1), r(2), r(5), r(6), r(7), w(8), w(9)],
};

/// Causal ALiBi attention backward, dk and dv.
///
/// Tested against `canopy_shaders::kernels::attention::attention_backward_reference`.
pub const ATTENTION_BACKWARD_DKV: Kernel = Kernel {
    name: "attention.backward_dkv",
    file: "attention",
    source: source::ATTENTION,
    entry: "backward_dkv",
    bindings: &[u(0), r(1), r(2), r(6), r(7), w(8), r(10)],
};

/// Corpus quality signals: clearing the word-hash tables.
///
/// Tested against `canopy_shaders::kernels::quality::quality_reference`.
pub const QUALITY_CLEAR: Kernel = Kernel {
    name: "quality.clear",
    file: "quality",
    source: source::QUALITY,
    entry: "clear",
    bindings: &[u(0), w(3)],
};

/// Corpus quality signals, one thread per document, one round of its bytes.
///
/// Tested against `canopy_shaders::kernels::quality::quality_reference`.
pub const QUALITY_SIGNALS: Kernel = Kernel {
    name: "quality.signals",
    file: "quality",
    source: source::QUALITY,
    entry: "signals",
    bindings: &[u(0), r(1), r(2), w(3), w(4), w(5)],
};

/// MinHash: word hashes, one thread per document, one round of its bytes.
///
/// Tested against `canopy_shaders::kernels::minhash::minhash_reference`.
pub const MINHASH_WORDS: Kernel = Kernel {
    name: "minhash.words",
    file: "minhash",
    source: source::MINHASH,
    entry: "words",
    bindings: &[u(0), r(1), r(2), w(3), w(4)],
};

/// MinHash: shingle hashes in place over the word hashes, one thread per document.
///
/// Tested against `canopy_shaders::kernels::minhash::minhash_reference`.
pub const MINHASH_SHINGLES: Kernel = Kernel {
    name: "minhash.shingles",
    file: "minhash",
    source: source::MINHASH,
    entry: "shingles",
    bindings: &[u(0), r(2), w(3), w(4)],
};

/// MinHash: signatures, one thread per (document, permutation), one round of its shingles.
///
/// Tested against `canopy_shaders::kernels::minhash::minhash_reference`.
pub const MINHASH_SIGNATURE: Kernel = Kernel {
    name: "minhash.signature",
    file: "minhash",
    source: source::MINHASH,
    entry: "signature",
    bindings: &[u(0), r(2), r(5), r(6), w(7)],
};

/// Every shipped kernel.
pub const KERNELS: &[Kernel] = &[
    MATMUL,
    BIAS_ADD,
    BIAS_GRAD,
    GELU_FORWARD,
    GELU_BACKWARD,
    LAYERNORM_FORWARD,
    LAYERNORM_BACKWARD_INPUT,
    LAYERNORM_BACKWARD_PARAMS,
    EMBEDDING_GATHER,
    EMBEDDING_SCATTER,
    CROSS_ENTROPY_FORWARD,
    CROSS_ENTROPY_BACKWARD,
    ADAMW_STEP,
    NORM_PARTIAL,
    NORM_FINISH,
    INT8_SCALES,
    INT8_QUANTIZE,
    INT8_DEQUANTIZE,
    ATTENTION_FORWARD,
    ATTENTION_BACKWARD_DQ,
    ATTENTION_BACKWARD_DKV,
    QUALITY_CLEAR,
    QUALITY_SIGNALS,
    MINHASH_WORDS,
    MINHASH_SHINGLES,
    MINHASH_SIGNATURE,
];

/// The kernel named `name` (`file.entry`), if it is registered.
pub fn kernel(name: &str) -> Option<&'static Kernel> {
    KERNELS.iter().find(|k| k.name == name)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use naga::valid::{Capabilities, ValidationFlags, Validator};

    use super::*;

    fn parse(kernel: &Kernel) -> naga::Module {
        match naga::front::wgsl::parse_str(kernel.source) {
            Ok(module) => module,
            Err(e) => panic!(
                "{}.wgsl does not parse:\n{}",
                kernel.file,
                e.emit_to_string(kernel.source)
            ),
        }
    }

    /// Every registered kernel parses and validates with the capabilities the runtime asks
    /// for (none beyond WebGPU's defaults), its entry point exists, its declared bindings are
    /// exactly the globals the entry point uses, and every compute entry point of a file is
    /// registered.
    #[test]
    fn every_kernel_validates_with_naga() {
        let mut entries_by_file: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for kernel in KERNELS {
            let module = parse(kernel);
            let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
                .validate(&module)
                .unwrap_or_else(|e| {
                    panic!(
                        "{} does not validate:\n{}",
                        kernel.name,
                        e.emit_to_string(kernel.source)
                    )
                });
            let (index, entry) = module
                .entry_points
                .iter()
                .enumerate()
                .find(|(_, e)| e.name == kernel.entry)
                .unwrap_or_else(|| panic!("{}: no entry point {}", kernel.name, kernel.entry));
            assert_eq!(entry.stage, naga::ShaderStage::Compute, "{}", kernel.name);
            let used = info.get_entry_point(index);
            let mut seen = Vec::new();
            for (handle, var) in module.global_variables.iter() {
                if used[handle].is_empty() {
                    continue;
                }
                let Some(binding) = &var.binding else {
                    continue;
                };
                assert_eq!(
                    binding.group, 0,
                    "{}: bindings live in group 0",
                    kernel.name
                );
                let kind = match var.space {
                    naga::AddressSpace::Uniform => BindingKind::Uniform,
                    naga::AddressSpace::Storage { access } => {
                        if access.contains(naga::StorageAccess::STORE) {
                            BindingKind::ReadWrite
                        } else {
                            BindingKind::Read
                        }
                    }
                    other => panic!("{}: unexpected address space {other:?}", kernel.name),
                };
                seen.push(Binding {
                    index: binding.binding,
                    kind,
                });
            }
            seen.sort_by_key(|b| b.index);
            let mut declared = kernel.bindings.to_vec();
            declared.sort_by_key(|b| b.index);
            assert_eq!(
                declared, seen,
                "{}: registered bindings differ from what the entry point uses",
                kernel.name
            );
            let registered = entries_by_file.entry(kernel.file).or_default();
            registered.insert(kernel.entry);
            for e in &module.entry_points {
                assert!(
                    KERNELS
                        .iter()
                        .any(|k| k.file == kernel.file && k.entry == e.name),
                    "{}.wgsl: entry point {} is not registered",
                    kernel.file,
                    e.name
                );
            }
        }
    }

    #[test]
    fn every_wgsl_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("wgsl");
        let mut on_disk = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("wgsl") {
                let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
                on_disk.insert(stem);
            }
        }
        let registered: BTreeSet<String> = KERNELS.iter().map(|k| k.file.to_owned()).collect();
        let unregistered: Vec<_> = on_disk.difference(&registered).collect();
        assert!(
            unregistered.is_empty(),
            "wgsl files not in the registry: {unregistered:?}"
        );
        let missing: Vec<_> = registered.difference(&on_disk).collect();
        assert!(missing.is_empty(), "registered files missing: {missing:?}");
        // The registered source is the file on disk.
        for kernel in KERNELS {
            let text = std::fs::read_to_string(dir.join(format!("{}.wgsl", kernel.file))).unwrap();
            assert_eq!(text, kernel.source, "{}", kernel.name);
        }
    }

    #[test]
    fn kernel_names_are_unique_and_well_formed() {
        let mut names = BTreeSet::new();
        for kernel in KERNELS {
            assert!(names.insert(kernel.name), "duplicate {}", kernel.name);
            assert_eq!(kernel.name, format!("{}.{}", kernel.file, kernel.entry));
            assert_eq!(
                kernel.bindings.first().map(|b| b.kind),
                Some(BindingKind::Uniform)
            );
            assert!(
                kernel.storage_count() <= 8,
                "{}: WebGPU allows 8",
                kernel.name
            );
        }
        assert!(kernel("matmul.main").is_some());
        assert!(kernel("nope.main").is_none());
    }
}
