//! Corpus tasks on the worker: quality signals and MinHash signatures over one corpus chunk.
//!
//! The worker fetches the chunk (an [`ObjectKind::CorpusChunk`] object the coordinator signed),
//! runs [`canopy_shaders::corpus::compute_chunk`] on its backend (the WGSL kernels when the
//! runtime holds a GPU, the CPU path otherwise: both give the same bytes), puts the encoded
//! result into an [`ObjectKind::CorpusResult`] object that it signs, provides it, and names its
//! root in the [`CorpusOutput`]. The root is the blake3 of the encoding, so two honest peers
//! name the same root; the coordinator asks this node for the manifest (the swarm answers it
//! for provided objects), fetches the bytes and checks them against the chunk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use canopy_protocol::chunk::DEFAULT_CHUNK_SIZE;
use canopy_protocol::messages::{CorpusOutput, CorpusSpec, TaskOutput};
use canopy_protocol::{Manifest, ObjectKind};
use canopy_shaders::Runtime;

use super::Worker;
use crate::error::NodeError;
use crate::polite::throttle::Throttle;

impl Worker {
    /// Runs a corpus task. `Ok(None)`: interrupted (stop, pause, or the lease was lost).
    /// The "tokens" of a corpus task are the text bytes of its chunk.
    pub(super) async fn corpus(
        &mut self,
        spec: &CorpusSpec,
        task: u64,
        cancel: Arc<AtomicBool>,
    ) -> Result<Option<(TaskOutput, u64, f64)>, NodeError> {
        self.shared.update(|s| s.state = "fetching".into());
        let (_, frame) = self.object(spec.chunk, ObjectKind::CorpusChunk).await?;
        if self.shared.interrupted().is_some() || cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        self.shared.update(|s| s.state = "computing".into());
        let runtime = self.runtime.clone();
        let params = spec.minhash;
        let mut throttle = Throttle::new(self.config.cpu_share);
        let (shared, stop) = (self.shared.clone(), cancel.clone());
        let (computed, secs) = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let computed = match &*runtime {
                Runtime::Gpu(gpu) => canopy_shaders::corpus::compute_chunk(&**gpu, &frame, &params),
                Runtime::Cpu(cpu) => canopy_shaders::corpus::compute_chunk(cpu, &frame, &params),
            };
            let secs = started.elapsed().as_secs_f64();
            if let Some(t) = throttle.as_mut() {
                t.pace(|| stop.load(Ordering::Relaxed) || shared.interrupted().is_some());
            }
            (computed, secs)
        })
        .await
        .map_err(|e| NodeError::Coordinator(format!("the corpus thread failed: {e}")))?;
        let (result, bytes) = computed
            .map_err(|e| NodeError::BadObject(format!("corpus chunk {}: {e}", spec.chunk)))?;
        if self.shared.interrupted().is_some() || cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        self.shared.update(|s| {
            s.state = "uploading".into();
            s.progress = 1.0;
        });
        let text_bytes: u64 = result
            .documents
            .iter()
            .map(|d| u64::from(d.signals[0]))
            .sum();
        let metadata = BTreeMap::from([
            ("task".to_string(), task.to_string()),
            ("chunk".to_string(), spec.chunk.to_string()),
        ]);
        let manifest = Manifest::build(
            ObjectKind::CorpusResult,
            &bytes,
            DEFAULT_CHUNK_SIZE,
            metadata,
        )?;
        let root = manifest.root;
        let signed = manifest.sign(&self.keys)?;
        self.client.provide(signed, bytes).await?;
        self.retain(spec.chunk).await;
        self.retain(root).await;
        tracing::info!(
            task,
            chunk = %spec.chunk.fmt_short(),
            result = %root.fmt_short(),
            documents = result.documents.len(),
            "corpus chunk computed"
        );
        Ok(Some((
            TaskOutput::Corpus(CorpusOutput {
                result: root,
                documents: result.documents.len() as u64,
            }),
            text_bytes,
            secs,
        )))
    }
}
