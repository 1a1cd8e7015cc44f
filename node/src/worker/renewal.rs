//! Keeping a lease alive while its task runs: renewals on a timer, and what each answer
//! means for the task (keep going, stop, or retry when the coordinator is busy).

use super::*;

/// Renews `grant` at a third of its remaining time until aborted; cancels the task when the
/// coordinator says the lease is gone.
pub(super) async fn renew(
    client: Client,
    coordinator: PeerId,
    grant: LeaseGrant,
    progress: Arc<AtomicU32>,
    cancel: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    let mut expires = grant.expires_at_ms;
    let mut wait = Duration::from_millis((expires.saturating_sub(now_ms()) / 3).max(500));
    loop {
        tokio::time::sleep(wait).await;
        let message = Message::LeaseRenew(LeaseRenew {
            lease: grant.lease,
            progress_permille: progress.load(Ordering::Relaxed).min(1000) as u16,
        });
        let answer = client.request(coordinator, 0, message).await;
        let outcome = renewal(grant.lease, &answer);
        let busy = outcome == Renewal::AskAgain;
        match outcome {
            Renewal::Extended(until) => expires = until,
            Renewal::Lost(reason) => {
                tracing::warn!(lease = grant.lease.0, "lease lost: {reason}");
                shared.update(|s| s.last_error = Some(format!("lease lost: {reason}")));
                cancel.store(true, Ordering::Relaxed);
                return;
            }
            Renewal::AskAgain => {
                tracing::debug!(
                    lease = grant.lease.0,
                    "the coordinator is busy; renewing again shortly"
                )
            }
            Renewal::Unexpected(kind) => {
                tracing::warn!("the coordinator answered a renewal with {kind}")
            }
            // Unreachable for now: keep working; the coordinator may still take the result.
            Renewal::Failed(e) => tracing::info!(lease = grant.lease.0, "renewal failed: {e}"),
        }
        let left = expires.saturating_sub(now_ms());
        // A busy coordinator did not see the renewal: ask again soon, well before the lease
        // runs out, without hammering it.
        wait = Duration::from_millis(if busy {
            (left / 6).clamp(250, 1000)
        } else {
            (left / 3).max(500)
        });
    }
}

/// What one answer to a lease renewal means for the lease.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Renewal {
    /// Renewed, until this time (ms since the epoch).
    Extended(u64),
    /// The coordinator no longer holds the lease for this node: stop the task.
    Lost(String),
    /// The coordinator (or its swarm) was too busy to read the renewal: the lease stands,
    /// renew again shortly.
    AskAgain,
    /// An answer that is not one to a renewal; the lease stands.
    Unexpected(String),
    /// The request did not get an answer; the lease stands.
    Failed(String),
}

pub(super) fn renewal(lease: LeaseId, answer: &Result<Message, NodeError>) -> Renewal {
    match answer {
        Ok(Message::LeaseRenewed(r)) if r.lease == lease => Renewal::Extended(r.expires_at_ms),
        Ok(message) if network::is_busy(message) => Renewal::AskAgain,
        Ok(Message::NoWork(none)) => Renewal::Lost(none.reason.clone()),
        Ok(other) => Renewal::Unexpected(format!("{:?}", other.kind())),
        Err(e) => Renewal::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_protocol::messages::{LeaseRenewed, NoWork};

    fn no_work(reason: &str) -> Result<Message, NodeError> {
        Ok(Message::NoWork(NoWork {
            retry_after_ms: 1000,
            reason: reason.into(),
            join_first: false,
        }))
    }

    /// A busy coordinator (its queue full, the renewal unread) does not take the lease away:
    /// the node used to cancel its task and hand the lease back, which then hung until expiry.
    #[test]
    fn a_busy_answer_to_a_renewal_keeps_the_lease() {
        let lease = LeaseId(7);
        assert_eq!(
            renewal(lease, &no_work(network::PEER_BUSY)),
            Renewal::AskAgain
        );
        assert_eq!(
            renewal(lease, &no_work("this lease has expired or was reassigned")),
            Renewal::Lost("this lease has expired or was reassigned".into())
        );
        let renewed = Ok(Message::LeaseRenewed(LeaseRenewed {
            lease,
            expires_at_ms: 42,
        }));
        assert_eq!(renewal(lease, &renewed), Renewal::Extended(42));
        assert!(matches!(
            renewal(LeaseId(8), &renewed),
            Renewal::Unexpected(_)
        ));
    }
}
