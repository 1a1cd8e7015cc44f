//! How text becomes token ids, and the `tokenizer.json` every export carries.
//!
//! Both kinds share one id layout, so a model's special ids never depend on the tokenizer:
//!
//! | ids | tokens |
//! | --- | --- |
//! | `0..256` | the 256 bytes (byte `b` is id `b`), written as GPT-2's byte-level characters |
//! | `256..260` | `<s>` (beginning), `</s>` (end), `<pad>`, `<unk>` (reserved, never produced) |
//! | `260..vocab` | BPE merges in the order they were learned (none for [`TokenizerKind::Bytes`]) |
//!
//! Byte-level is a BPE with no merges: the same `tokenizer.json` layout describes both, and
//! [`Tokenizer::encode`] of byte-level skips the library and gives the bytes. BPE is trained
//! with the Hugging Face `tokenizers` crate (byte-level pre-tokenizer with GPT-2's split
//! pattern, as BLOOM's tokenizer), then renumbered to the layout above.

use tokenizers::models::bpe::{BPE, BpeTrainer, Vocab};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper};

/// Ids below this are the bytes.
pub const BYTE_TOKENS: u32 = 256;

/// The special tokens after the bytes, in id order from 256: beginning of a document, end of
/// one, padding, and a reserved token that is never produced.
pub const SPECIAL_TOKENS: [&str; 4] = ["<s>", "</s>", "<pad>", "<unk>"];

/// The smallest vocabulary: the bytes and the special tokens.
pub const MIN_VOCAB: u32 = BYTE_TOKENS + SPECIAL_TOKENS.len() as u32;

/// The largest BPE vocabulary Canopy trains (token ids travel as 16-bit integers).
pub const MAX_VOCAB: u32 = 1 << 16;

/// The largest `tokenizer.json` Canopy reads (from a project directory or a peer).
pub const MAX_JSON_BYTES: usize = 32 << 20;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A BPE vocabulary outside what Canopy supports.
    #[error("a BPE vocabulary of {0} tokens: it must be from {MIN_VOCAB} to {MAX_VOCAB}")]
    Vocab(u32),
    /// The training text is too small to learn merges from.
    #[error("no BPE merges could be learned from the training text")]
    NothingToLearn,
    /// A `tokenizer.json` that Canopy does not read.
    #[error("tokenizer.json: {0}")]
    Json(String),
    /// The `tokenizers` library refused.
    #[error("tokenizer: {0}")]
    Library(String),
}

fn lib(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Library(e.to_string())
}

/// Which tokenizer a project uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// Byte `b` is token `b`.
    Bytes,
    /// Byte-level BPE with a vocabulary of this many tokens (bytes and specials included).
    Bpe {
        /// Tokens in the vocabulary.
        vocab: u32,
    },
}

/// A tokenizer: byte-level, or byte-level BPE.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    merges: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.vocab())
            .finish()
    }
}

impl Tokenizer {
    /// The byte-level tokenizer.
    pub fn bytes() -> Self {
        // Building from the fixed byte vocabulary cannot fail.
        Self::from_merges(Vec::new()).unwrap_or_else(|_| unreachable!("the byte vocabulary"))
    }

    /// The tokenizer of `kind`, trained on `documents` when it is BPE.
    pub fn new<S: AsRef<str> + Send>(
        kind: TokenizerKind,
        documents: impl Iterator<Item = S> + Send,
    ) -> Result<Self, TokenizerError> {
        match kind {
            TokenizerKind::Bytes => Ok(Self::bytes()),
            TokenizerKind::Bpe { vocab } => Self::train_bpe(vocab, documents),
        }
    }

    /// Learns `vocab - 260` byte-level BPE merges from `documents`. Fewer are kept when the
    /// text has no more pairs seen twice.
    pub fn train_bpe<S: AsRef<str> + Send>(
        vocab: u32,
        documents: impl Iterator<Item = S> + Send,
    ) -> Result<Self, TokenizerError> {
        if !(MIN_VOCAB..=MAX_VOCAB).contains(&vocab) {
            return Err(TokenizerError::Vocab(vocab));
        }
        let alphabet = ByteLevel::alphabet().into_iter().collect();
        let trainer = BpeTrainer::builder()
            .show_progress(false)
            .min_frequency(2)
            // The trainer's vocabulary is the byte alphabet and the merges.
            .vocab_size((vocab - SPECIAL_TOKENS.len() as u32) as usize)
            .initial_alphabet(alphabet)
            .build();
        let mut tk = tokenizers::Tokenizer::new(BPE::default());
        tk.with_pre_tokenizer(Some(pre_tokenizer()));
        tk.train(&mut TrainerWrapper::BpeTrainer(trainer), documents)
            .map_err(lib)?;
        let ModelWrapper::BPE(model) = tk.get_model() else {
            return Err(lib("training gave a model that is not BPE"));
        };
        let json = serde_json::to_value(model).map_err(lib)?;
        let merges = pairs(&json["merges"])?;
        if merges.is_empty() {
            return Err(TokenizerError::NothingToLearn);
        }
        Self::from_merges(merges)
    }

    /// The tokenizer with the byte and special tokens at their ids and these merges after.
    fn from_merges(merges: Vec<(String, String)>) -> Result<Self, TokenizerError> {
        let chars = byte_chars();
        let mut vocab = Vocab::default();
        for (b, c) in chars.iter().enumerate() {
            vocab.insert(c.to_string(), b as u32);
        }
        for (k, s) in SPECIAL_TOKENS.iter().enumerate() {
            vocab.insert((*s).to_string(), BYTE_TOKENS + k as u32);
        }
        for (a, b) in &merges {
            let next = vocab.len() as u32;
            vocab.entry(format!("{a}{b}")).or_insert(next);
        }
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges.clone())
            .build()
            .map_err(lib)?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(pre_tokenizer()));
        inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
        let specials: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .map(|s| AddedToken::from(*s, true))
            .collect();
        inner.add_special_tokens(&specials);
        Ok(Self {
            inner,
            merges: merges.len() as u32,
        })
    }

    /// Reads a `tokenizer.json` that Canopy wrote (bounded by [`MAX_JSON_BYTES`]), checking
    /// that it keeps Canopy's id layout.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TokenizerError> {
        if bytes.len() > MAX_JSON_BYTES {
            return Err(TokenizerError::Json(format!(
                "{} bytes, more than the {MAX_JSON_BYTES} allowed",
                bytes.len()
            )));
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| TokenizerError::Json(e.to_string()))?;
        let model = &value["model"];
        if model["type"] != "BPE" {
            return Err(TokenizerError::Json("the model is not BPE".into()));
        }
        let merges = pairs(&model["merges"])?;
        let rebuilt = Self::from_merges(merges)?;
        // The vocabulary must be the one the merges give: ids are what the model reads.
        let ids = model["vocab"]
            .as_object()
            .ok_or_else(|| TokenizerError::Json("no vocab".into()))?;
        let expected = rebuilt.inner.get_vocab(false);
        let same = ids.len() == expected.len()
            && ids
                .iter()
                .all(|(t, id)| id.as_u64().map(|i| i as u32) == expected.get(t).copied());
        if !same {
            return Err(TokenizerError::Json(
                "the vocabulary is not Canopy's layout (bytes, special tokens, then merges in order)"
                    .into(),
            ));
        }
        Ok(rebuilt)
    }

    /// The `tokenizer.json` that `transformers` (`PreTrainedTokenizerFast`) loads.
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        self.inner.to_string(true).map_err(lib)
    }

    /// Tokens in the vocabulary (bytes, specials and merges).
    pub fn vocab(&self) -> u32 {
        MIN_VOCAB + self.merges
    }

    /// Which kind this is.
    pub fn kind(&self) -> TokenizerKind {
        if self.merges == 0 {
            TokenizerKind::Bytes
        } else {
            TokenizerKind::Bpe {
                vocab: self.vocab(),
            }
        }
    }

    /// The token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        if self.merges == 0 {
            return Ok(text.bytes().map(u32::from).collect());
        }
        Ok(self
            .inner
            .encode_fast(text, false)
            .map_err(lib)?
            .get_ids()
            .to_vec())
    }

    /// The token ids of many documents, each followed by `</s>`, in order.
    pub fn encode_documents<S: AsRef<str>>(
        &self,
        documents: impl IntoIterator<Item = S>,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        for d in documents {
            ids.extend(self.encode(d.as_ref())?);
            ids.push(BYTE_TOKENS + 1);
        }
        Ok(ids)
    }

    /// The text of `ids`, special tokens dropped; bytes that do not form UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes token `id` stands for (none for a special token or an unknown id).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        if id < BYTE_TOKENS {
            return vec![id as u8];
        }
        if id < MIN_VOCAB {
            return Vec::new();
        }
        let Some(token) = self.inner.id_to_token(id) else {
            return Vec::new();
        };
        let chars = byte_chars();
        token
            .chars()
            .filter_map(|c| chars.iter().position(|&b| b == c).map(|b| b as u8))
            .collect()
    }

    /// `tokenizer_config.json` for `transformers`.
    pub fn config_json(&self, model_max_length: usize) -> serde_json::Value {
        serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": SPECIAL_TOKENS[0],
            "eos_token": SPECIAL_TOKENS[1],
            "pad_token": SPECIAL_TOKENS[2],
            "unk_token": SPECIAL_TOKENS[3],
            "add_bos_token": false,
            "add_eos_token": false,
            "clean_up_tokenization_spaces": false,
            "model_max_length": model_max_length,
        })
    }

    /// Writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` into
    /// `dir` (an export), so `AutoTokenizer.from_pretrained(dir)` loads this tokenizer.
    pub fn write_files(
        &self,
        dir: &std::path::Path,
        model_max_length: usize,
    ) -> Result<(), TokenizerError> {
        let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).map_err(lib);
        let files = [
            ("tokenizer.json", self.to_json()?),
            (
                "tokenizer_config.json",
                pretty(&self.config_json(model_max_length))?,
            ),
            (
                "special_tokens_map.json",
                pretty(&Self::special_tokens_map_json())?,
            ),
        ];
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| TokenizerError::Library(format!("writing {}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// The tokenizer in words, for a model card.
    pub fn describe(&self) -> String {
        match self.kind() {
            TokenizerKind::Bytes => {
                "byte-level: each UTF-8 byte is a token (ids 0-255), then <s>, </s>, <pad>, \
                 <unk> (256-259)"
                    .into()
            }
            TokenizerKind::Bpe { vocab } => format!(
                "byte-level BPE with {vocab} tokens (GPT-2 split pattern, as BLOOM's), trained \
                 on the project's training text: bytes at ids 0-255, <s>, </s>, <pad>, <unk> \
                 at 256-259, then {} merges",
                self.merges
            ),
        }
    }

    /// `special_tokens_map.json` for `transformers`.
    pub fn special_tokens_map_json() -> serde_json::Value {
        serde_json::json!({
            "bos_token": SPECIAL_TOKENS[0],
            "eos_token": SPECIAL_TOKENS[1],
            "pad_token": SPECIAL_TOKENS[2],
            "unk_token": SPECIAL_TOKENS[3],
        })
    }
}

/// The byte-level pre-tokenizer: no prefix space, GPT-2's split pattern.
fn pre_tokenizer() -> PreTokenizerWrapper {
    PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true))
}

/// GPT-2's printable character for each byte (the byte-level alphabet), by byte value.
fn byte_chars() -> [char; 256] {
    let mut chars = ['\0'; 256];
    let mut n = 0u32;
    for (b, c) in chars.iter_mut().enumerate() {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let code = if printable {
            b as u32
        } else {
            n += 1;
            255 + n
        };
        *c = char::from_u32(code).unwrap_or('\0');
    }
    chars
}

/// The merges of a serialized BPE model: `[["a", "b"], …]` or `["a b", …]`.
fn pairs(value: &serde_json::Value) -> Result<Vec<(String, String)>, TokenizerError> {
    let bad = || TokenizerError::Json("merges must be pairs of tokens".into());
    let list = value.as_array().ok_or_else(bad)?;
    if list.len() > MAX_VOCAB as usize {
        return Err(TokenizerError::Json(format!(
            "{} merges, more than the {MAX_VOCAB} allowed",
            list.len()
        )));
    }
    list.iter()
        .map(|m| match m {
            serde_json::Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                _ => Err(bad()),
            },
            serde_json::Value::String(s) => s
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(bad),
            _ => Err(bad()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udhr;

    fn corpus() -> Vec<String> {
        udhr::documents().into_iter().map(|d| d.text).collect()
    }

    #[test]
    fn bytes_are_their_own_ids_and_round_trip() {
        let tk = Tokenizer::bytes();
        assert_eq!(tk.vocab(), 260);
        assert_eq!(tk.kind(), TokenizerKind::Bytes);
        let text = "Tous les êtres humains — 人人生而自由\n";
        let ids = tk.encode(text).unwrap();
        assert_eq!(ids, text.bytes().map(u32::from).collect::<Vec<_>>());
        assert_eq!(tk.decode(&ids), text);
        // The library, given the same tokenizer.json, agrees with the fast path.
        let lib_ids = tk.inner.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(lib_ids, ids);
    }

    #[test]
    fn bpe_learns_merges_keeps_the_layout_and_round_trips() {
        let docs = corpus();
        let tk = Tokenizer::train_bpe(1024, docs.iter()).unwrap();
        assert_eq!(tk.vocab(), 1024);
        assert_eq!(tk.kind(), TokenizerKind::Bpe { vocab: 1024 });
        for id in 0..MIN_VOCAB {
            let expected: Vec<u8> = if id < 256 { vec![id as u8] } else { vec![] };
            assert_eq!(tk.token_bytes(id), expected);
        }
        let mut tokens = 0;
        let mut bytes = 0;
        for d in &docs {
            let ids = tk.encode(d).unwrap();
            assert!(ids.iter().all(|&i| i < 1024 && !(256..260).contains(&i)));
            assert_eq!(&tk.decode(&ids), d, "round trip");
            tokens += ids.len();
            bytes += d.len();
        }
        // Merges shorten the text: well under one token a byte.
        assert!(
            (tokens as f64) < 0.5 * bytes as f64,
            "{tokens} tokens, {bytes} bytes"
        );
        let again = Tokenizer::train_bpe(1024, docs.iter()).unwrap();
        assert_eq!(
            again.to_json().unwrap(),
            tk.to_json().unwrap(),
            "deterministic"
        );
    }

    #[test]
    fn the_json_reads_back_and_a_changed_one_is_refused() {
        let docs = corpus();
        let tk = Tokenizer::train_bpe(400, docs.iter()).unwrap();
        let json = tk.to_json().unwrap();
        let back = Tokenizer::from_json(json.as_bytes()).unwrap();
        assert_eq!(back.vocab(), 400);
        let text = "Everyone has the right to education.";
        assert_eq!(back.encode(text).unwrap(), tk.encode(text).unwrap());
        // Swapping two ids breaks the layout the model was trained with.
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let vocab = v["model"]["vocab"].as_object_mut().unwrap();
        vocab.insert("a".into(), serde_json::json!(98));
        vocab.insert("b".into(), serde_json::json!(97));
        let err = Tokenizer::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("layout"), "{err}");
        for bad in [&b"{"[..], b"{\"model\":{\"type\":\"WordPiece\"}}", b"[]"] {
            assert!(Tokenizer::from_json(bad).is_err());
        }
        assert!(matches!(
            Tokenizer::train_bpe(100, docs.iter()),
            Err(TokenizerError::Vocab(100))
        ));
    }
}
