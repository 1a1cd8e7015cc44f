//! Canopy's token ids: the 256 byte values, then the special tokens of the presets'
//! vocabulary (`256..260`, [`crate::model::config::SPECIAL_TOKENS`]).
//!
//! The model reads raw bytes, so there is no tokenizer to ship: byte `b` is token `b`. The
//! special tokens follow BLOOM's order (`bos`, `eos`, `pad`, in BLOOM ids 1, 2, 3) shifted
//! past the bytes, and are what the exported `config.json` names as `bos_token_id`,
//! `eos_token_id` and `pad_token_id` ([`mod@crate::export`]). A model whose vocabulary stops
//! before an id does not have that token.

/// Beginning of a document.
pub const BOS_ID: u32 = 256;

/// End of a document (training shards put it between documents).
pub const EOS_ID: u32 = 257;

/// Padding; a padded position's target is ignored by the loss.
pub const PAD_ID: u32 = 258;

/// Reserved for later use (a mask or separator); never produced today.
pub const RESERVED_ID: u32 = 259;

/// `id` if the vocabulary of `vocab` ids holds it, else `None`.
pub fn in_vocab(id: u32, vocab: usize) -> Option<u32> {
    ((id as usize) < vocab).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{BYTE_VOCAB, SPECIAL_TOKENS};

    #[test]
    fn the_special_ids_follow_the_bytes_and_fit_the_presets() {
        let vocab = BYTE_VOCAB + SPECIAL_TOKENS;
        let ids = [BOS_ID, EOS_ID, PAD_ID, RESERVED_ID];
        for (k, id) in ids.into_iter().enumerate() {
            assert_eq!(id as usize, BYTE_VOCAB + k);
            assert_eq!(in_vocab(id, vocab), Some(id));
        }
        assert_eq!(in_vocab(BOS_ID, BYTE_VOCAB), None);
    }
}
