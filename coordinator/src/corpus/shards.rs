//! Byte-level tokenised training shards.
//!
//! # Format
//!
//! `OUT/shards/shard-NNNNN.bin` (five-digit index from 00000) holds token ids as little-endian
//! `u16`: for each kept document, in `kept.jsonl` order, `BOS` (256), the document's UTF-8
//! bytes (token `b` for byte `b`), `EOS` (257) — the model's byte vocabulary
//! (`canopy_shaders::tokens`). A shard is closed before a document that would take it past
//! `shard_tokens`; documents are never split, so a document longer than that has a shard of
//! its own. `OUT/shards/index.json` lists the format and, per shard, its file, token and
//! document counts, and the blake3 of its bytes (the shard's content address).

use std::path::Path;

use canopy_protocol::Digest;
use canopy_shaders::tokens::{BOS_ID, EOS_ID};
use serde::Serialize;

use super::{CorpusBuildError, Result};

/// The shard directory's name under the output directory.
pub const DIR: &str = "shards";
/// The index file's name in the shard directory.
pub const INDEX: &str = "index.json";

/// One shard in the index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardEntry {
    /// File name in the shard directory.
    pub file: String,
    /// Tokens in it.
    pub tokens: u64,
    /// Documents in it.
    pub documents: u64,
    /// blake3 of its bytes, in hex.
    pub blake3: String,
}

/// The shard index (`shards/index.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardIndex {
    /// A one-line description of the format.
    pub format: &'static str,
    /// Bytes per token.
    pub token_bytes: u32,
    /// The beginning-of-document token.
    pub bos: u32,
    /// The end-of-document token.
    pub eos: u32,
    /// Tokens in all shards.
    pub total_tokens: u64,
    /// Documents in all shards.
    pub total_documents: u64,
    /// The shards, in order.
    pub shards: Vec<ShardEntry>,
}

/// The tokens of one document: `BOS`, its bytes, `EOS`.
pub fn tokenize(text: &str) -> impl Iterator<Item = u16> + '_ {
    std::iter::once(BOS_ID as u16)
        .chain(text.bytes().map(u16::from))
        .chain(std::iter::once(EOS_ID as u16))
}

/// Writes `texts` as shards of about `shard_tokens` tokens into `dir` (created), with the index.
pub fn write_shards(
    dir: &Path,
    texts: impl IntoIterator<Item = impl AsRef<str>>,
    shard_tokens: usize,
) -> Result<ShardIndex> {
    std::fs::create_dir_all(dir).map_err(|source| CorpusBuildError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut index = ShardIndex {
        format: "little-endian u16 token ids; per document BOS, its UTF-8 bytes, EOS",
        token_bytes: 2,
        bos: BOS_ID,
        eos: EOS_ID,
        total_tokens: 0,
        total_documents: 0,
        shards: Vec::new(),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut docs = 0u64;
    let flush = |buf: &mut Vec<u8>, docs: &mut u64, index: &mut ShardIndex| -> Result<()> {
        let file = format!("shard-{:05}.bin", index.shards.len());
        let path = dir.join(&file);
        std::fs::write(&path, &buf[..]).map_err(|source| CorpusBuildError::Io { path, source })?;
        let tokens = buf.len() as u64 / 2;
        index.total_tokens += tokens;
        index.total_documents += *docs;
        index.shards.push(ShardEntry {
            file,
            tokens,
            documents: *docs,
            blake3: Digest::of(buf).to_string(),
        });
        buf.clear();
        *docs = 0;
        Ok(())
    };
    for text in texts {
        let text = text.as_ref();
        let tokens = text.len() + 2;
        if docs > 0 && buf.len() / 2 + tokens > shard_tokens {
            flush(&mut buf, &mut docs, &mut index)?;
        }
        for t in tokenize(text) {
            buf.extend_from_slice(&t.to_le_bytes());
        }
        docs += 1;
    }
    if docs > 0 {
        flush(&mut buf, &mut docs, &mut index)?;
    }
    let path = dir.join(INDEX);
    let json = serde_json::to_vec_pretty(&index).map_err(|source| CorpusBuildError::Json {
        what: "the shard index",
        source,
    })?;
    std::fs::write(&path, json).map_err(|source| CorpusBuildError::Io { path, source })?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_hold_bos_bytes_eos_and_never_split_a_document() {
        let tmp = tempfile::tempdir().unwrap();
        let long = "x".repeat(3000);
        let texts = ["héllo", "ab", long.as_str(), "c"];
        let index = write_shards(tmp.path(), texts, 1024).unwrap();
        let counts: Vec<(u64, u64)> = index
            .shards
            .iter()
            .map(|s| (s.documents, s.tokens))
            .collect();
        assert_eq!(counts, vec![(2, 8 + 4), (1, 3002), (1, 3)]);
        assert_eq!(index.total_tokens, 12 + 3002 + 3);
        let bytes = std::fs::read(tmp.path().join("shard-00000.bin")).unwrap();
        let tokens: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let mut expected = vec![256u16];
        expected.extend("héllo".bytes().map(u16::from));
        expected.extend([257, 256, u16::from(b'a'), u16::from(b'b'), 257]);
        assert_eq!(tokens, expected);
        assert_eq!(index.shards[0].blake3, Digest::of(&bytes).to_string());
        assert!(tmp.path().join(INDEX).is_file());
    }
}
