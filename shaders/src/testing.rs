//! Test helpers, for this crate's tests and (with the `test-utils` feature) its dependents':
//! the test adapter or a skip, the small model configuration tests train, approximate
//! comparison, seeded inputs, and the macro that instantiates a generic test for both
//! backends.

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::ModelConfig;
use crate::runtime::{AdapterKind, Gpu, require_adapter_from_env};

/// The device every WGSL test uses: a software adapter (lavapipe) if there is one, else any
/// wgpu adapter. With none, the test panics when `CANOPY_REQUIRE_ADAPTER=1` (as CI sets) and
/// otherwise prints a notice and returns `None`, so the caller skips.
pub fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        match Gpu::request(AdapterKind::Software).or_else(|_| Gpu::request(AdapterKind::Any)) {
            Ok(gpu) => {
                eprintln!("WGSL tests run on {}", gpu.report());
                Some(gpu)
            }
            Err(e) if require_adapter_from_env() => {
                panic!("CANOPY_REQUIRE_ADAPTER=1 but no wgpu adapter: {e}")
            }
            Err(e) => {
                eprintln!("notice: skipping the WGSL tests: no wgpu adapter ({e})");
                None
            }
        }
    })
    .as_ref()
}

/// The small model tests build, train and check gradients on: the byte vocabulary with its
/// special tokens (260), hidden 16, 2 heads, 2 layers, sequences of 8.
pub fn small_config() -> ModelConfig {
    ModelConfig {
        vocab: 260,
        hidden: 16,
        layers: 2,
        heads: 2,
        seq_len: 8,
    }
}

/// Asserts that `actual` matches `expected` within a relative tolerance `rel`: each element
/// must satisfy `|a − e| ≤ rel · max(|e|, floor)`, where `floor` is 1% of the largest `|e|`
/// (so values that cancel to near zero are judged against the scale of the data, not their
/// own). NaN must match NaN, infinities must match exactly. Names the first failing index.
#[track_caller]
pub fn assert_equals_approx(actual: &[f32], expected: &[f32], rel: f32) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let largest = expected
        .iter()
        .filter(|e| e.is_finite())
        .fold(0.0f32, |m, e| m.max(e.abs()));
    let floor = (0.01 * largest).max(f32::MIN_POSITIVE);
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        if e.is_nan() || a.is_nan() {
            assert!(e.is_nan() && a.is_nan(), "index {i}: got {a}, expected {e}");
            continue;
        }
        if e.is_infinite() || a.is_infinite() {
            assert_eq!(a, e, "index {i}");
            continue;
        }
        let err = (a - e).abs();
        let bound = rel * e.abs().max(floor);
        assert!(
            err <= bound,
            "index {i} (of {}): got {a}, expected {e}; error {err:e} > {bound:e} (relative tolerance {rel:e})",
            actual.len()
        );
    }
}

/// A seeded generator, one seed per test.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` values uniform in `[-scale, scale)`.
pub fn uniform(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// A random document of at least `len` bytes (it may run a few bytes past), in one of three
/// styles: 0, words from a multilingual vocabulary with varied whitespace; 1, arbitrary bytes
/// with runs (control bytes, invalid UTF-8); 2, printable ASCII.
pub fn random_document(r: &mut ChaCha8Rng, len: usize, style: u32) -> Vec<u8> {
    const VOCAB: &[&str] = &[
        "the",
        "of",
        "and",
        "A",
        "ROOTS",
        "BLOOM",
        "corpus",
        "model",
        "Data",
        "42",
        "3.14",
        "e-mail",
        "(see",
        "below)",
        "x",
        "!!",
        "über",
        "naïve",
        "東京",
        "データ",
        "ñ",
        "…",
        "مرحبا",
        "привет",
        "नमस्ते",
        "🙂",
        "aa",
        "bbb",
    ];
    const SPACES: &[&str] = &[" ", " ", " ", "  ", "\n", "\t", "\r\n", "\x0b", "\x0c"];
    let mut doc = Vec::with_capacity(len + 16);
    while doc.len() < len {
        match style {
            // Words and spaces.
            0 => {
                doc.extend_from_slice(VOCAB[r.random_range(0..VOCAB.len())].as_bytes());
                doc.extend_from_slice(SPACES[r.random_range(0..SPACES.len())].as_bytes());
            }
            // Arbitrary bytes (control bytes, invalid UTF-8, runs).
            1 => {
                let b: u8 = r.random();
                let run = if r.random_bool(0.1) {
                    r.random_range(1..6)
                } else {
                    1
                };
                doc.extend(std::iter::repeat_n(b, run));
            }
            // Printable ASCII.
            _ => doc.push(r.random_range(0x20..0x7f)),
        }
    }
    doc
}

#[cfg(test)]
/// Instantiates generic tests `fn name<B: Backend>(backend: &B)` (defined in the enclosing
/// module) once for the CPU path and once for the wgpu path.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod cpu_backend {
            $(
                #[test]
                fn $name() {
                    super::$name(&$crate::cpu::Cpu::new());
                }
            )*
        }
        mod wgpu_backend {
            $(
                #[test]
                fn $name() {
                    if let Some(gpu) = $crate::testing::gpu() {
                        super::$name(gpu);
                    }
                }
            )*
        }
    };
}

#[cfg(test)]
pub(crate) use backend_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approx_accepts_close_values() {
        assert_equals_approx(&[1.0, 100.0, f32::NAN], &[1.00001, 100.001, f32::NAN], 1e-4);
    }

    #[test]
    #[should_panic(expected = "index 1")]
    fn approx_names_the_first_failing_index() {
        assert_equals_approx(&[1.0, 2.0, 3.0], &[1.0, 2.1, 3.5], 1e-4);
    }

    #[test]
    #[should_panic(expected = "index 0")]
    fn approx_refuses_nan_for_a_number() {
        assert_equals_approx(&[f32::NAN], &[1.0], 1e-4);
    }
}
