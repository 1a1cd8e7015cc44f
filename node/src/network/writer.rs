//! Writing a fetched object to the chunk store while it arrives: each fetch has a writer on a
//! blocking thread that stores chunks as they are checked, so the disk works beside the
//! network instead of after it; at the end it assembles the object, stores what is still
//! missing, holds it, and answers the fetch.

use std::collections::HashMap;
use std::sync::Arc;

use canopy_protocol::{Digest, Reassembler};
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use super::fetch::Fetched;
use crate::buffers::CHUNKS;
use crate::error::NodeError;
use crate::store::{ChunkStore, Durability};

/// The end of a fetch: everything the writer needs to answer it.
pub(crate) struct Finish {
    pub(crate) reassembler: Reassembler,
    pub(crate) reply: Option<oneshot::Sender<Result<Fetched, NodeError>>>,
    pub(crate) sources: HashMap<PeerId, usize>,
    pub(crate) direct_bytes: u64,
    pub(crate) relayed_bytes: u64,
    /// Told the object's root once it is stored, so the swarm announces it.
    pub(crate) stored: mpsc::Sender<Digest>,
}

/// What a fetch hands its writer.
pub(crate) enum WriteJob {
    /// A chunk checked against the manifest.
    Chunk(Digest, Vec<u8>),
    /// Every chunk is in.
    Finish(Box<Finish>),
}

/// Chunks waiting for a writer, at most (beyond, a chunk is stored at the end instead).
const QUEUE: usize = 64;

/// Starts a writer for one fetch; it ends after [`WriteJob::Finish`] or when dropped.
pub(crate) fn spawn_writer(
    store: Arc<ChunkStore>,
    durability: Durability,
) -> std::sync::mpsc::SyncSender<WriteJob> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<WriteJob>(QUEUE);
    tokio::task::spawn_blocking(move || {
        for job in rx {
            match job {
                WriteJob::Chunk(id, data) => {
                    // A failed write is retried when the object is stored at the end.
                    if let Err(e) = store.put_fetched_chunk(&id, &data, durability) {
                        tracing::debug!("writing a fetched chunk: {e}");
                    }
                    CHUNKS.give(data);
                }
                WriteJob::Finish(finish) => {
                    let Finish {
                        reassembler,
                        reply,
                        sources,
                        direct_bytes,
                        relayed_bytes,
                        stored,
                    } = *finish;
                    let manifest = reassembler.manifest().clone();
                    let result = reassembler
                        .finish()
                        .map_err(NodeError::from)
                        .and_then(|data| {
                            store
                                .put_fetched(&manifest, &data, durability)
                                .map(|()| data)
                        })
                        .map(|data| Fetched {
                            data,
                            sources,
                            direct_bytes,
                            relayed_bytes,
                        });
                    if result.is_ok() {
                        let _ = stored.blocking_send(manifest.root);
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                    return;
                }
            }
        }
    });
    tx
}
