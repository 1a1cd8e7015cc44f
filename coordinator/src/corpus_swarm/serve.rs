//! The build's network loop: requests from the swarm in, answers out, leases expired on a
//! timer, until every chunk is agreed.

use super::*;

impl SwarmBuild {
    /// Runs the build on the swarm until every chunk is agreed (then writes the outputs and
    /// returns `true`) or `stop` resolves (`false`). Answers joins, lease requests (corpus
    /// tasks only), renewals, releases, manifest requests and results.
    pub async fn run(
        self: Arc<Self>,
        client: &Client,
        events: &mut mpsc::Receiver<NetworkEvent>,
        stop: impl std::future::Future<Output = ()>,
        report: mpsc::Sender<CorpusEvent>,
    ) -> Result<bool> {
        tokio::pin!(stop);
        let (done, total) = self.progress()?;
        let _ = report
            .send(CorpusEvent::Planned {
                build: self.build,
                chunks: total,
                done,
                documents: self.plan.documents.len(),
            })
            .await;
        self.provide(client).await?;
        for agreement in self.settle_orphans().await? {
            let _ = report.send(agreement).await;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let (done_tx, mut done_rx) = mpsc::channel::<()>(64);
        loop {
            let (done, total) = self.progress()?;
            if done == total {
                break;
            }
            tokio::select! {
                _ = &mut stop => return Ok(false),
                event = events.recv() => match event {
                    Some(NetworkEvent::Request { peer, id, round, message, from }) => {
                        let network = from.as_ref().and_then(crate::admission::network_of);
                        let inbound = Inbound { peer, id, round, message, network };
                        self.on_request(client, inbound, &done_tx, &report).await;
                    }
                    Some(_) => {}
                    None => return Err(CorpusSwarmError::Invalid("the swarm stopped".into())),
                },
                _ = done_rx.recv() => {}
                _ = tick.tick() => {
                    let now = now_ms();
                    let expired = self.state().transaction(|tx| scheduler::expire(tx, now))?;
                    for lease in expired {
                        tracing::info!(lease = lease.id, task = lease.task, peer = %lease.peer, "corpus lease expired; task reopened");
                    }
                }
            }
        }
        let me = self.clone();
        let event = tokio::task::spawn_blocking(move || me.finish())
            .await
            .map_err(|e| CorpusSwarmError::Invalid(format!("writing the outputs: {e}")))??;
        let _ = report.send(event).await;
        Ok(true)
    }

    pub(super) async fn on_request(
        self: &Arc<Self>,
        client: &Client,
        inbound: Inbound,
        done: &mpsc::Sender<()>,
        report: &mpsc::Sender<CorpusEvent>,
    ) {
        let Inbound {
            peer,
            id,
            round,
            message,
            network,
        } = inbound;
        if let Message::TaskResult(result) = message {
            let me = self.clone();
            let client = client.clone();
            let done = done.clone();
            let report = report.clone();
            tokio::spawn(async move {
                let (ack, agreed) = me.judge(&client, peer, result).await;
                if let Err(e) = client
                    .respond(id, round, Message::ResultAck(ack.clone()))
                    .await
                {
                    tracing::debug!("acknowledging a corpus result: {e}");
                }
                let _ = report
                    .send(CorpusEvent::Result {
                        peer: peer.to_string(),
                        task: ack.task.0,
                        accepted: ack.accepted,
                        reason: ack.reason,
                    })
                    .await;
                if let Some(event) = agreed {
                    let _ = report.send(event).await;
                }
                let _ = done.send(()).await;
            });
            return;
        }
        let answer = self.answer(peer, network.as_deref(), message);
        let answer = match answer {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%peer, "handling a request during the corpus build: {e}");
                no_work(1000, NoWorkReason::Internal)
            }
        };
        if let Err(e) = client.respond(id, round, answer).await {
            tracing::debug!("answering a request: {e}");
        }
    }

    pub(super) fn answer(
        &self,
        peer: PeerId,
        network: Option<&str>,
        message: Message,
    ) -> Result<Message> {
        let now = now_ms();
        let key = peer.to_string();
        let mut state = self.state();
        let message = match answer_peer(
            &mut state,
            &self.config,
            &self.keys.public(),
            Caller { key: &key, network },
            0,
            now,
            message,
        )? {
            Answered::Reply(reply, _) => return Ok(reply),
            Answered::Other(message) => message,
        };
        Ok(match message {
            Message::LeaseRequest(_) => {
                let (build, config, order) = (self.build, &self.config.scheduling, &self.sampler);
                crate::service::lease_answer(crate::service::answer_lease_request(
                    &mut state,
                    &key,
                    now,
                    Work::Corpus,
                    None,
                    1_000,
                    |tx, p, active| grant(tx, config, order, build, p, now, active),
                )?)?
            }
            other => no_work(
                5_000,
                NoWorkReason::Unexpected(format!("{:?}", other.kind())),
            ),
        })
    }
}
