//! Real text and tokenizers for Canopy.
//!
//! - [`udhr`]: the project's built-in training text, the Universal Declaration of Human
//!   Rights in 24 languages and 8 scripts, shipped with the crate (about 430 KB), so the demo
//!   and the tests train on real language on a machine without network access.
//! - [`tokenizer`]: the two ways text becomes token ids. Byte-level (byte `b` is token `b`)
//!   and byte-level BPE trained on a project's corpus with the Hugging Face `tokenizers`
//!   crate, as BLOOM's tokenizer is. Both keep the byte tokens at ids `0..256` and the special
//!   tokens at `256..260`, and both write a `tokenizer.json` that `transformers` loads.
//! - [`card`]: the Hugging Face model and dataset cards (`README.md` with YAML metadata) that
//!   exports and corpus builds carry.

pub mod card;
pub mod tokenizer;
pub mod udhr;

pub use tokenizer::{Tokenizer, TokenizerError, TokenizerKind};
