//! The rules a configuration must follow, checked after parsing: each value in its range and
//! the values consistent with each other, with errors naming the file and the key.

use super::*;

impl Config {
    /// [`Config::validate`], with errors naming `origin`.
    pub(super) fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let v = Validator { origin };

        let p = &self.project;
        let name_ok = !p.name.is_empty()
            && p.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        v.ensure(
            name_ok,
            "project.name",
            format_args!(
                "must be non-empty and use only ASCII letters, digits, '-', '_' and '.' (got {:?})",
                p.name
            ),
        )?;

        let n = &self.network;
        v.ensure(
            !n.listen.is_empty(),
            "network.listen",
            "must list at least one multiaddr, such as \"/ip4/0.0.0.0/tcp/4740\"",
        )?;
        for addr in &n.listen {
            v.ensure(
                addr.starts_with('/'),
                "network.listen",
                format_args!(
                    "entries must be multiaddrs starting with '/', such as \"/ip4/0.0.0.0/tcp/4740\" (got {addr:?})"
                ),
            )?;
        }

        v.ensure(
            (MIN_PROVIDER_TTL_SECS..=MAX_PROVIDER_TTL_SECS).contains(&n.provider_ttl_secs),
            "network.provider_ttl_secs",
            format_args!(
                "must be {MIN_PROVIDER_TTL_SECS} to {MAX_PROVIDER_TTL_SECS} (got {})",
                n.provider_ttl_secs
            ),
        )?;

        let d = &self.data;
        if let Some(corpus) = &d.corpus {
            v.ensure(
                !corpus.as_os_str().is_empty(),
                "data.corpus",
                "must be a directory path; leave the key out to use the built-in text",
            )?;
        }
        if let Some(c) = &self.corpus {
            v.ensure(
                !c.sources.as_os_str().is_empty(),
                "corpus.sources",
                "must be the sources directory",
            )?;
            v.ensure(
                !c.out.as_os_str().is_empty(),
                "corpus.out",
                "must be the output directory",
            )?;
            v.ensure(
                d.corpus.is_none(),
                "data.corpus",
                "must be left out when [corpus] is given: training uses the build's kept.jsonl",
            )?;
        }
        v.at_least("data.generated_bytes", d.generated_bytes, 1)?;
        let m = &self.model;
        v.ensure(
            (canopy_text::tokenizer::MIN_VOCAB..=canopy_text::tokenizer::MAX_VOCAB)
                .contains(&m.bpe_vocab),
            "model.bpe_vocab",
            "must be from 260 (the bytes and special tokens) to 65536",
        )?;
        v.at_least("data.shard_bytes", d.shard_bytes, 1)?;
        v.open_range("data.holdout", d.holdout, 0.0, 0.5)?;

        let t = &self.training;
        v.at_least("training.rounds", t.rounds, 1)?;
        v.at_least("training.inner_steps", t.inner_steps, 1)?;
        v.at_least("training.batch_size", t.batch_size, 1)?;
        v.at_least("training.seq_len", t.seq_len, 1)?;
        v.positive("training.lr", t.lr)?;
        v.ensure(
            t.task_lr_decay > 0.0 && t.task_lr_decay <= 1.0,
            "training.task_lr_decay",
            format_args!("must be above 0 and at most 1 (got {})", t.task_lr_decay),
        )?;
        v.non_negative("training.weight_decay", t.weight_decay)?;
        v.positive("training.grad_clip", t.grad_clip)?;
        v.unit_interval("training.topk_density", t.topk_density)?;
        if let Some(bits) = t.compression_bits {
            v.bits("training.compression_bits", bits)?;
        }
        v.at_least("training.tasks_per_round", t.tasks_per_round, 1)?;
        v.at_least("training.min_updates", t.min_updates, 1)?;
        v.ensure(
            t.min_updates <= t.tasks_per_round,
            "training.min_updates",
            format_args!(
                "must be at most training.tasks_per_round ({}) (got {})",
                t.tasks_per_round, t.min_updates
            ),
        )?;
        v.at_least("training.round_deadline_secs", t.round_deadline_secs, 1)?;
        v.unit_interval("training.staleness_decay", t.staleness_decay)?;

        let a = &self.aggregation;
        v.ensure(
            COMBINE_METHODS.contains(&a.combine.as_str()),
            "aggregation.combine",
            format_args!(
                "must be one of \"trimmed_mean\", \"median\" or \"mean\" (got {:?})",
                a.combine
            ),
        )?;
        v.ensure(
            (0.0..0.5).contains(&a.trim),
            "aggregation.trim",
            format_args!("must be at least 0 and below 0.5 (got {})", a.trim),
        )?;
        v.non_negative("aggregation.clip_multiple", a.clip_multiple)?;
        v.positive("aggregation.outer_lr", a.outer_lr)?;
        v.ensure(
            (0.0..1.0).contains(&a.outer_momentum),
            "aggregation.outer_momentum",
            format_args!("must be at least 0 and below 1 (got {})", a.outer_momentum),
        )?;
        v.bits("aggregation.step_bits", a.step_bits)?;

        let s = &self.scheduling;
        v.ensure(
            s.lease_slack.is_finite() && s.lease_slack >= 1.0,
            "scheduling.lease_slack",
            format_args!(
                "must be a finite number of at least 1 (got {})",
                s.lease_slack
            ),
        )?;
        v.at_least("scheduling.min_lease_secs", s.min_lease_secs, 1)?;
        v.ensure(
            s.min_lease_secs <= s.max_lease_secs,
            "scheduling.max_lease_secs",
            format_args!(
                "must be at least scheduling.min_lease_secs ({}) (got {})",
                s.min_lease_secs, s.max_lease_secs
            ),
        )?;
        v.positive(
            "scheduling.assumed_tokens_per_sec",
            s.assumed_tokens_per_sec,
        )?;
        v.at_least("scheduling.heartbeat_secs", s.heartbeat_secs, 1)?;
        v.ensure(
            (50..=60_000).contains(&s.idle_retry_ms),
            "scheduling.idle_retry_ms",
            format_args!("must be 50 to 60000 (got {})", s.idle_retry_ms),
        )?;

        let ver = &self.verification;
        v.ensure(
            (0.0..=1.0).contains(&ver.rerun_fraction),
            "verification.rerun_fraction",
            format_args!("must be between 0 and 1 (got {})", ver.rerun_fraction),
        )?;
        v.ensure(
            (0.0..=1.0).contains(&ver.corpus_recheck_fraction),
            "verification.corpus_recheck_fraction",
            format_args!(
                "must be between 0 and 1 (got {})",
                ver.corpus_recheck_fraction
            ),
        )?;
        v.ensure(
            (-1.0..=1.0).contains(&ver.min_cosine),
            "verification.min_cosine",
            format_args!("must be between -1 and 1 (got {})", ver.min_cosine),
        )?;
        v.non_negative("verification.max_loss_increase", ver.max_loss_increase)?;
        v.ensure(
            ver.outlier_spreads.is_finite() && ver.outlier_spreads >= 1.0,
            "verification.outlier_spreads",
            format_args!(
                "must be a finite number of at least 1 (got {})",
                ver.outlier_spreads
            ),
        )?;
        v.at_least("verification.corpus_replicas", ver.corpus_replicas, 1)?;
        v.ensure(
            self.admission.join_work_bits <= MAX_JOIN_WORK_BITS,
            "admission.join_work_bits",
            format_args!(
                "must be at most {MAX_JOIN_WORK_BITS} (got {})",
                self.admission.join_work_bits
            ),
        )?;
        let min = &self.admission.min_node_version;
        v.ensure(
            min.is_empty() || crate::admission::parse_version(min).is_some(),
            "admission.min_node_version",
            format_args!("must be a version such as \"0.2.0\", or \"\" for any (got {min:?})"),
        )?;

        let r = &self.reputation;
        v.ensure(
            r.accepted >= 0,
            "reputation.accepted",
            format_args!("must be at least 0 (got {})", r.accepted),
        )?;
        v.ensure(
            r.rejected <= 0,
            "reputation.rejected",
            format_args!("must be at most 0 (got {})", r.rejected),
        )?;
        v.ensure(
            r.failed_verification <= 0,
            "reputation.failed_verification",
            format_args!("must be at most 0 (got {})", r.failed_verification),
        )?;
        v.ensure(
            r.ban_below < r.start,
            "reputation.ban_below",
            format_args!(
                "must be below reputation.start ({}), or every new node is banned (got {})",
                r.start, r.ban_below
            ),
        )?;

        self.dashboard.check(&v)?;

        v.at_least("store.cap_mib", self.store.cap_mib, 1)?;
        Ok(())
    }
}

/// Whether `text` looks like `host:port` with a non-empty host and a valid port.
pub(super) fn is_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}
