//! Entry points for the fuzz targets in `protocol/fuzz`: each takes untrusted bytes, runs them
//! through one decoder and everything a receiver would do next, and says whether the input was
//! accepted. None may panic, whatever the bytes. The same functions run over the seed corpus in
//! an ordinary test, so the targets are exercised on every `cargo test`.

use crate::chunk::{Reassembler, SignedManifest};
use crate::codec::{self, MAX_FRAME_LEN};
use crate::compress::CompressedUpdate;
use crate::envelope::Envelope;
use crate::governance::{DataSource, OptOut};
use crate::messages::Message;

/// What a receiver made of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded and passed every check.
    Accepted,
    /// Refused with an error.
    Rejected,
}

fn outcome<T, E>(result: Result<T, E>) -> Outcome {
    match result {
        Ok(_) => Outcome::Accepted,
        Err(_) => Outcome::Rejected,
    }
}

/// A whole envelope: decode, verify, open the message.
pub fn envelope(data: &[u8]) -> Outcome {
    outcome(Envelope::from_frame(data).and_then(|e| e.verify().and_then(|v| v.message())))
}

/// A bare message payload: decode and validate.
pub fn message(data: &[u8]) -> Outcome {
    outcome(
        codec::decode::<Message, MAX_FRAME_LEN>(data)
            .map_err(|_| ())
            .and_then(|m| m.validate().map_err(|_| ())),
    )
}

/// A signed manifest: decode, verify, and start a bounded reassembly from it.
pub fn manifest(data: &[u8]) -> Outcome {
    outcome(SignedManifest::from_frame(data).and_then(|m| {
        let manifest = m.verify()?.clone();
        Reassembler::new(manifest, 1 << 20)
    }))
}

/// A compressed update object: decode it and decompress it at its declared length (bounded).
pub fn update(data: &[u8]) -> Outcome {
    outcome(
        CompressedUpdate::from_frame(data)
            .map_err(|_| ())
            .and_then(|u| {
                let len = usize::try_from(u.len).map_err(|_| ())?.min(1 << 20);
                u.decompress(len).map_err(|_| ())
            }),
    )
}

/// A governance record or an opt-out entry.
pub fn governance(data: &[u8]) -> Outcome {
    let source = outcome(DataSource::from_frame(data));
    let opt_out = outcome(OptOut::from_frame(data));
    if source == Outcome::Accepted || opt_out == Outcome::Accepted {
        Outcome::Accepted
    } else {
        Outcome::Rejected
    }
}

/// Every target by name, as the fuzz crate and the seed test list them.
pub const TARGETS: &[(&str, fn(&[u8]) -> Outcome)] = &[
    ("envelope", envelope),
    ("message", message),
    ("manifest", manifest),
    ("update", update),
    ("governance", governance),
];
