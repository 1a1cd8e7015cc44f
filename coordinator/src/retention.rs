//! What the coordinator keeps on disk as a run goes on.
//!
//! Every round adds a model version, its momentum, its int8 step and the nodes' updates. The run
//! needs only a few of them: the current and previous model versions (the previous one judges
//! late updates and lets nodes one round behind catch up), the current momentum and step, the
//! updates accepted but not yet aggregated or still waiting for their re-run, the training
//! shards, and the checkpoints the
//! project asked to keep (`store.checkpoint_every`). After each round closes everything else
//! is released from the chunk store (its chunks deleted) and its manifest forgotten, so the
//! coordinator's disk stays flat over thousands of rounds. On start the live objects are held
//! again and whatever a crash left behind is collected.

use std::collections::HashSet;

use canopy_node::store::ChunkStore;
use canopy_protocol::{Digest, ObjectKind};

use crate::state::{Reader, Result, ResultStatus, State};

/// Kinds of object whose life is bounded by the rounds (shards and corpus objects stay).
const ROUND_KINDS: [ObjectKind; 4] = [
    ObjectKind::ModelWeights,
    ObjectKind::Checkpoint,
    ObjectKind::ModelDelta,
    ObjectKind::Update,
];

/// The round named in an object's manifest metadata.
fn named_round(r: &Reader<'_>, root: &Digest) -> Result<Option<u64>> {
    Ok(r.manifest(root)?.and_then(|m| {
        m.manifest()
            .metadata
            .get("round")
            .and_then(|v| v.parse().ok())
    }))
}

/// The objects of round-bounded kinds the run still needs when `current` is the round in
/// progress.
fn live(r: &Reader<'_>, current: u64, checkpoint_every: u32) -> Result<HashSet<Digest>> {
    let mut keep = HashSet::new();
    if let Some(round) = r.round(current)? {
        keep.insert(round.model_root);
        keep.extend(round.momentum_root);
    }
    if let Some(root) = r.meta(crate::project::STEP_CARRY_META)? {
        keep.extend(root.parse::<Digest>().ok());
    }
    if let Some(previous) = current.checked_sub(1).and_then(|p| r.round(p).transpose()) {
        keep.insert(previous?.model_root);
    }
    for root in r.objects_of_kind(&format!("{:?}", ObjectKind::ModelDelta))? {
        if named_round(r, &root)? == Some(current) {
            keep.insert(root);
        }
    }
    if checkpoint_every > 0 {
        for root in r.objects_of_kind(&format!("{:?}", ObjectKind::ModelWeights))? {
            if named_round(r, &root)?.is_some_and(|n| n % u64::from(checkpoint_every) == 0) {
                keep.insert(root);
            }
        }
    }
    keep.extend(r.unaggregated()?.into_iter().filter_map(|u| u.update_root));
    // Updates waiting for their re-run: compared with it, and aggregated if they pass.
    keep.extend(
        r.results(None, Some(ResultStatus::Pending))?
            .into_iter()
            .filter_map(|u| u.update_root),
    );
    Ok(keep)
}

/// Releases every round-bounded object the run no longer needs with `current` in progress and
/// forgets its manifest; returns the bytes freed.
pub(crate) fn release_superseded(
    state: &mut State,
    store: &ChunkStore,
    current: u64,
    checkpoint_every: u32,
) -> Result<u64> {
    let (keep, candidates) = {
        let r = state.read();
        let keep = live(&r, current, checkpoint_every)?;
        let mut candidates = Vec::new();
        for kind in ROUND_KINDS {
            candidates.extend(
                r.objects_of_kind(&format!("{kind:?}"))?
                    .into_iter()
                    .filter(|root| !keep.contains(root)),
            );
        }
        (keep, candidates)
    };
    debug_assert!(candidates.iter().all(|c| !keep.contains(c)));
    let freed = candidates.iter().map(|root| store.release(root)).sum();
    state.transaction(|tx| tx.forget_objects(&candidates))?;
    Ok(freed)
}

/// On start: holds every live object (round-bounded and not), releases the superseded ones,
/// and collects every chunk nothing holds (left by a crash or by an earlier version of
/// Canopy that never released anything). Returns the bytes freed.
pub(crate) fn collect_on_start(
    state: &mut State,
    store: &ChunkStore,
    current: u64,
    checkpoint_every: u32,
) -> Result<u64> {
    {
        let r = state.read();
        let keep = live(&r, current, checkpoint_every)?;
        for root in &keep {
            if let Some(signed) = r.manifest(root)?
                && !store.hold(signed.manifest())
            {
                tracing::warn!(object = %root.fmt_short(), "a live object is not complete in the store");
            }
        }
    }
    let released = release_superseded(state, store, current, checkpoint_every)?;
    Ok(released + store.collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use canopy_protocol::compress::{CodecSpec, Compressor, DEFAULT_INT8_BLOCK};
    use canopy_protocol::messages::TaskId;
    use canopy_protocol::{Digest, Keypair, Manifest, ObjectKind};

    use crate::config::Config;
    use crate::project::Project;
    use crate::state::ResultRecord;
    use crate::state::ResultStatus;

    /// Records an accepted update of small seeded values for the round in progress, as the
    /// service does once it has judged one.
    fn accept_update(project: &Project, keys: &Keypair, n: u64) {
        record_update(project, keys, n, ResultStatus::Accepted);
    }

    /// Records an update of small seeded values for the round in progress with `status`;
    /// returns its root.
    fn record_update(project: &Project, keys: &Keypair, n: u64, status: ResultStatus) -> Digest {
        let len = project.model.num_params();
        let values: Vec<f32> = (0..len)
            .map(|i| ((i as u64 * 2_654_435_761 + n * 97) % 1000) as f32 * 1e-6 - 5e-4)
            .collect();
        let update = Compressor::new(
            CodecSpec::Int8 {
                block: DEFAULT_INT8_BLOCK,
            },
            len,
        )
        .and_then(|mut c| c.compress(&values))
        .expect("compressed");
        let round = project.current().round;
        let (signed, bytes) =
            canopy_node::objects::update_object(keys, &update, TaskId(n), round).expect("update");
        project
            .store
            .put_object(signed.manifest(), &bytes)
            .expect("stored");
        let record = ResultRecord {
            lease: n,
            task: n,
            peer: keys.peer_id().to_string(),
            round,
            update_root: Some(signed.manifest().root),
            norm: Some(0.1),
            train_loss: Some(5.0),
            tokens: 16,
            status,
            reason: None,
            received_ms: n,
            weight: 1.0,
            aggregated_in: None,
            loss_change: None,
        };
        project
            .state()
            .transaction(|tx| {
                tx.put_manifest(&signed, n)?;
                tx.insert_result(&record)
            })
            .expect("recorded");
        signed.manifest().root
    }

    /// Issue 19, "verification fails open": an update sampled for a re-run that had not
    /// happened when its round closed was aggregated unchecked. It now waits (`pending`); its
    /// object is kept while it waits, a restart included; and the round that closes without
    /// its verdict leaves it out unless the project takes unchecked updates in.
    #[test]
    fn an_update_waiting_for_its_rerun_is_kept_and_left_out_when_its_round_closes() {
        for aggregate in [false, true] {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut config = Config::default();
            config.training.rounds = 10;
            config.training.batch_size = 1;
            config.training.seq_len = 16;
            config.verification.aggregate_unchecked = aggregate;
            let keys = Keypair::generate().expect("key");
            let project = Project::open(dir.path(), config.clone()).expect("project");
            let root = record_update(&project, &keys, 0, ResultStatus::Pending);
            drop(project);
            let project = Project::open(dir.path(), config).expect("reopened");
            let manifest = project
                .state()
                .read()
                .manifest(&root)
                .expect("manifest")
                .expect("the waiting update's manifest is kept");
            assert!(project.store.has_object(manifest.manifest()));
            project.close_round().expect("round closes");
            let results = project.state().read().results(None, None).expect("results");
            let (status, used) = (results[0].status, results[0].aggregated_in);
            if aggregate {
                assert_eq!((status, used), (ResultStatus::Accepted, Some(0)));
            } else {
                assert_eq!((status, used), (ResultStatus::Unverified, None));
            }
        }
    }

    /// Issue 17, "disks fill": every model version, momentum and step stayed pinned, and the
    /// coordinator's directory grew by about 10 MB a round. Now its store is the same size
    /// after round 30 as after round 3, its object table does not grow, a restart keeps the
    /// run going on what is left, and chunks a crash left behind are collected.
    #[test]
    fn the_store_stays_flat_over_many_rounds_and_a_restart_collects_leftovers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.training.rounds = 100;
        config.training.batch_size = 1;
        config.training.seq_len = 16;
        let project = Project::open(dir.path(), config.clone()).expect("project");
        let objects = |p: &Project| {
            let state = p.state();
            let r = state.read();
            ["ModelWeights", "Checkpoint", "ModelDelta", "Update"]
                .iter()
                .map(|k| r.objects_of_kind(k).expect("objects").len())
                .sum::<usize>()
        };
        let keys = Keypair::generate().expect("key");
        let mut bytes = Vec::new();
        for n in 0..30 {
            accept_update(&project, &keys, n);
            project.close_round().expect("round closes");
            bytes.push(project.store.stats().bytes);
        }
        assert_eq!(bytes[3], bytes[29], "store bytes by round: {bytes:?}");
        // The current and previous weights, the current momentum, the current step and what
        // the steps have not carried yet.
        assert_eq!(objects(&project), 5);
        let round = project.current().round;
        let carry = project.outer_optimizer().step_carry().to_vec();
        assert!(
            carry.iter().any(|c| *c != 0.0),
            "the 4-bit steps left a carry"
        );
        let previous = project
            .state()
            .read()
            .round(round - 1)
            .expect("round")
            .expect("previous round");
        drop(project);

        // A chunk a crash left behind (an update fetched but never recorded, say).
        let store = canopy_node::store::ChunkStore::open(dir.path(), u64::MAX).expect("store");
        let stray = vec![7u8; 5000];
        let m = Manifest::build(ObjectKind::Update, &stray, 1024, BTreeMap::new()).expect("m");
        store.put_object(&m, &stray).expect("stray object");
        drop(store);

        let project = Project::open(dir.path(), config).expect("reopened");
        assert_eq!(project.current().round, round);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(project.outer_optimizer().step_carry()) == bits(&carry),
            "the restart reloads the step carry"
        );
        assert!(
            !project.store.has_object(&m),
            "the stray object was collected"
        );
        assert_eq!(project.store.stats().bytes, bytes[29]);
        // The previous version is still there (late updates are judged against it).
        let signed = project
            .state()
            .read()
            .manifest(&previous.model_root)
            .expect("manifest")
            .expect("the previous model's manifest is kept");
        assert!(project.store.has_object(signed.manifest()));
        accept_update(&project, &keys, 30);
        project
            .close_round()
            .expect("the run goes on after a restart");
        assert_eq!(project.store.stats().bytes, bytes[29]);
    }
}
