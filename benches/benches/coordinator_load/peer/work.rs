//! A simulated volunteer at work: asking for leases, running them (renewals, fetches, the
//! result) as `canopy-node`'s worker does.

use super::*;

impl SimPeer {
    /// The measured phase: leases, renewals and results until `end`.
    pub(crate) async fn work(&mut self, name: &str, shared: &Shared, end: Instant) {
        self.measuring = true;
        let spread = self.rng.random_range(0..2000);
        self.idle(Duration::from_millis(spread), Some(end)).await;
        while Instant::now() < end {
            if !self.joined {
                self.join(name).await;
                continue;
            }
            let ask = Message::LeaseRequest(LeaseRequest { slots: 1 });
            match self.request(0, &ask).await {
                Outcome::Answered(Message::LeaseGrant(grant), t) => {
                    self.stats.grant.push(t);
                    self.run_lease(grant, shared, end).await;
                }
                Outcome::Answered(Message::NoWork(none), t) => {
                    self.stats.nowork.push(t);
                    *self
                        .stats
                        .nowork_reasons
                        .entry(none.reason.clone())
                        .or_default() += 1;
                    if none.join_first {
                        self.joined = false;
                    }
                    let wait = u64::from(none.retry_after_ms).clamp(100, 60_000);
                    self.idle(Duration::from_millis(wait), Some(end)).await;
                }
                Outcome::Answered(_, _) => {
                    self.stats.unexpected += 1;
                    self.idle(Duration::from_secs(1), Some(end)).await;
                }
                Outcome::Lost => self.idle(Duration::from_secs(1), Some(end)).await,
            }
        }
    }

    pub(crate) async fn run_lease(&mut self, grant: LeaseGrant, shared: &Shared, end: Instant) {
        let round = match &grant.spec {
            TaskSpec::Train(t) => t.model_version,
            _ => 0,
        };
        let compute = (shared.task_ms as f64 * self.rng.random_range(0.5..1.5)) as u64;
        self.idle(Duration::from_millis(compute / 2), Some(end))
            .await;
        if Instant::now() >= end {
            return;
        }
        let renew = Message::LeaseRenew(LeaseRenew {
            lease: grant.lease,
            progress_permille: 500,
        });
        let mut renewal = self.request(0, &renew).await;
        // As `canopy-node` does: a renewal the coordinator's swarm was too busy to take is
        // sent again, the lease kept (`COORDINATOR_LOAD_RETRY_BUSY_RENEW=0` gives the lease up
        // instead, as nodes did before).
        let mut retries = 0;
        while shared.retry_busy_renew && retries < BUSY_RETRIES {
            let Outcome::Answered(Message::NoWork(none), t) = &renewal else {
                break;
            };
            if none.reason != SWARM_BUSY {
                break;
            }
            self.stats.renew.push(*t);
            self.stats.renew_busy_retried += 1;
            let wait = u64::from(none.retry_after_ms).clamp(100, 60_000);
            self.idle(Duration::from_millis(wait), None).await;
            retries += 1;
            renewal = self.request(0, &renew).await;
        }
        match renewal {
            Outcome::Answered(Message::LeaseRenewed(_), t) => self.stats.renew.push(t),
            Outcome::Answered(Message::NoWork(none), t) => {
                // As `canopy-node` does: a `NoWork` to a renewal means the lease is lost; the
                // task is cancelled and the lease handed back.
                self.stats.renew.push(t);
                self.stats.renew_refused += 1;
                *self
                    .stats
                    .nowork_reasons
                    .entry(format!("renew: {}", none.reason))
                    .or_default() += 1;
                let release = Message::LeaseRelease(LeaseRelease {
                    lease: grant.lease,
                    reason: ReleaseReason::Failed("lease lost".into()),
                });
                if let Outcome::Answered(_, t) = self.request(round, &release).await {
                    self.stats.release.push(t);
                }
                return;
            }
            Outcome::Answered(_, _) => self.stats.unexpected += 1,
            Outcome::Lost => {}
        }
        self.idle(Duration::from_millis(compute - compute / 2), Some(end))
            .await;
        if Instant::now() >= end {
            return;
        }
        // The update: signed by this peer, naming this task and round, provided from here.
        let unique = shared.unique.fetch_add(1, Ordering::Relaxed);
        let update = unique_update(&shared.template, unique);
        let (signed, bytes) =
            objects::update_object(&self.keys, &update, grant.task, round).expect("update");
        self.pending_root = Some(signed.manifest().root);
        self.serving.push((signed.clone(), bytes));
        if self.serving.len() > 2 {
            self.serving.remove(0);
        }
        let result = Message::TaskResult(TaskResult {
            lease: grant.lease,
            task: grant.task,
            output: TaskOutput::Train(Box::new(TrainOutput {
                update: signed,
                train_loss: 3.0,
                tokens: 16,
            })),
            compute_ms: compute,
        });
        for attempt in 0..=BUSY_RETRIES {
            self.chunk_asked_at = None;
            let busy = match self.request(round, &result).await {
                Outcome::Answered(Message::ResultAck(ack), t) => {
                    self.stats.result.push(t);
                    if !ack.accepted && ack.reason.as_deref() == Some(RESULT_BUSY) {
                        self.stats.result_busy += 1;
                        true
                    } else {
                        if let Some(asked) = self.chunk_asked_at {
                            let now = Instant::now();
                            let sent = now - Duration::from_secs_f64(t / 1000.0);
                            self.stats
                                .judge_queue
                                .push(ms(asked.saturating_duration_since(sent)));
                            self.stats.judge_rest.push(ms(now - asked));
                        }
                        if ack.accepted {
                            self.stats.accepted += 1;
                        } else {
                            let reason = ack.reason.unwrap_or_default();
                            *self.stats.refused.entry(reason).or_default() += 1;
                        }
                        false
                    }
                }
                Outcome::Answered(Message::NoWork(none), _) => {
                    *self
                        .stats
                        .nowork_reasons
                        .entry(format!("result: {}", none.reason))
                        .or_default() += 1;
                    true
                }
                Outcome::Answered(_, _) => {
                    self.stats.unexpected += 1;
                    false
                }
                Outcome::Lost => false,
            };
            if !busy || attempt == BUSY_RETRIES {
                if busy {
                    self.stats.result_given_up += 1;
                }
                break;
            }
            self.idle(Duration::from_secs(1), None).await;
        }
    }
}
