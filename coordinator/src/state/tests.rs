//! Tests of the state database: transactions, migrations, the ledger and its totals.

use canopy_protocol::messages::Tier;
use rusqlite::params;

use super::*;

#[test]
fn state_survives_reopening_and_transactions_are_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canopy.db");
    {
        let mut state = State::open(&path).unwrap();
        state
            .transaction(|tx| {
                tx.open_round(0, &Digest::of(b"model"), None, 1)?;
                let task = tx.insert_task(0, TaskKind::Train, b"spec", None, 100)?;
                tx.insert_lease(task, "peer-a", 1, 10)?;
                tx.set_meta("k", "v")
            })
            .unwrap();
        let failed: Result<()> = state.transaction(|tx| {
            tx.set_meta("k", "changed")?;
            Err(StateError::Corrupt {
                what: "test",
                reason: "abort".into(),
            })
        });
        assert!(failed.is_err());
    }
    let state = State::open(&path).unwrap();
    let r = state.read();
    assert_eq!(r.meta("k").unwrap().as_deref(), Some("v"));
    assert_eq!(
        r.current_round().unwrap().unwrap().model_root,
        Digest::of(b"model")
    );
    let leases = r.active_leases(Some("peer-a")).unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(
        r.task(leases[0].task).unwrap().unwrap().status,
        TaskStatus::Leased
    );
    let ro = State::open_read_only(&path).unwrap();
    assert_eq!(ro.read().rounds().unwrap().len(), 1);
}

/// The ledger summed per node as the code before `contributor_totals` summed it: the
/// reference the totals must equal.
const GROUP_BY_PEER: &str = "SELECT peer, COUNT(*),
        SUM(CASE WHEN accepted = 1 THEN 1 ELSE 0 END),
        SUM(CASE WHEN accepted = 0 AND verified != 'held' THEN 1 ELSE 0 END),
        SUM(CASE WHEN verified = 'verified' THEN 1 ELSE 0 END),
        SUM(CASE WHEN verified = 'verifier' THEN 1 ELSE 0 END),
        SUM(CASE WHEN accepted = 1 THEN tokens ELSE 0 END),
        SUM(CASE WHEN verified = 'verified' THEN tokens ELSE 0 END),
        SUM(compute_ms)
    FROM ledger GROUP BY peer ORDER BY peer";

fn rows_of(conn: &Connection, sql: &str) -> Vec<(String, [i64; 8])> {
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| {
        let mut v = [0i64; 8];
        for (i, x) in v.iter_mut().enumerate() {
            *x = r.get(i + 1)?;
        }
        Ok((r.get(0)?, v))
    })
    .unwrap()
    .collect::<rusqlite::Result<_>>()
    .unwrap()
}

fn totals_table(conn: &Connection) -> Vec<(String, [i64; 8])> {
    rows_of(
        conn,
        "SELECT peer, results, accepted, rejected, verified, verifications, tokens,
                tokens_verified, compute_ms
         FROM contributor_totals WHERE results > 0 ORDER BY peer",
    )
}

pub(super) fn joined(
    tx: &Tx<'_>,
    peer: &str,
    org: Option<&str>,
    country: Option<&str>,
) -> Result<()> {
    tx.upsert_peer(&PeerRecord {
        peer: peer.into(),
        tier: Tier::Volunteer,
        name: Some(format!("name of {peer}")),
        org: org.map(Into::into),
        country: country.map(Into::into),
        reputation: 0,
        banned: false,
        tokens_per_sec: None,
        slots: 1,
        joined_ms: 0,
        last_seen_ms: 0,
    })
}

/// A claim of `compute_ms` on `lease` for `task` by `peer`, arriving at `arrived_ms`.
pub(super) fn claim<'a>(
    peer: &'a str,
    task: u64,
    lease: u64,
    compute_ms: u64,
    accepted: bool,
    arrived_ms: u64,
) -> LedgerClaim<'a> {
    LedgerClaim {
        peer,
        round: 0,
        task,
        lease,
        kind: TaskKind::Train,
        compute_ms,
        accepted,
        verified: LedgerVerdict::Unchecked,
        result_hash: None,
        reason: (!accepted).then_some("refused"),
        arrived_ms,
    }
}

#[test]
fn a_refused_result_from_an_unknown_peer_writes_no_ledger_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(&dir.path().join("canopy.db")).unwrap();
    let written = state
        .transaction(|tx| {
            let task = tx.insert_task(0, TaskKind::Train, b"spec", None, 100)?;
            let refused = tx.ledger_entry(&claim("stranger", task, 999, 1 << 62, false, 5), 5)?;
            let accepted = tx.ledger_entry(&claim("stranger", task, 999, 1 << 62, true, 5), 5)?;
            Ok((refused, accepted))
        })
        .unwrap();
    assert_eq!(written, (None, None));
    let r = state.read();
    assert!(r.ledger().unwrap().is_empty());
    let totals = r.contributors().unwrap();
    assert_eq!(totals.entries, 0);
    assert!(totals.volunteers.is_empty());
}

#[test]
fn the_ledger_records_the_tasks_tokens_and_at_most_the_leases_wall_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(&dir.path().join("canopy.db")).unwrap();
    state
        .transaction(|tx| {
            joined(tx, "ada", None, None)?;
            joined(tx, "lin", None, None)?;
            let task = tx.insert_task(0, TaskKind::Train, b"spec", None, 100)?;
            let lease = tx.insert_lease(task, "ada", 1_000, 60_000)?;
            // The node's result claims far more than the task's tokens (the claim has no
            // say) and a compute time beyond the 4 s its lease ran.
            let record = ResultRecord {
                lease,
                task,
                peer: "ada".into(),
                round: 0,
                update_root: None,
                norm: None,
                train_loss: None,
                tokens: u64::MAX,
                status: ResultStatus::Accepted,
                reason: None,
                received_ms: 5_000,
                weight: 1.0,
                aggregated_in: None,
                loss_change: None,
            };
            tx.insert_result(&record)?;
            tx.ledger_entry(&claim("ada", task, lease, u64::MAX, true, 5_000), 6_000)?;
            // Within the bound, the claim stands.
            tx.ledger_entry(&claim("ada", task, lease, 1_500, true, 5_000), 6_000)?;
            // Refused: neither tokens nor compute time.
            tx.ledger_entry(&claim("ada", task, lease, 3_000, false, 5_000), 6_000)?;
            // Another node's lease bounds nothing for this one.
            tx.ledger_entry(&claim("lin", task, lease, 3_000, true, 5_000), 6_000)?;
            Ok(())
        })
        .unwrap();
    let figures: Vec<(String, u64, u64)> = state
        .read()
        .ledger()
        .unwrap()
        .into_iter()
        .map(|e| (e.peer, e.tokens, e.compute_ms))
        .collect();
    assert_eq!(
        figures,
        [
            ("ada".to_string(), 100, 4_000),
            ("ada".to_string(), 100, 1_500),
            ("ada".to_string(), 0, 0),
            ("lin".to_string(), 100, 0),
        ]
    );
    let ada = &state.read().contributions(ContributorGroup::Peer).unwrap()[0];
    assert_eq!(ada.key.as_deref(), Some("ada"));
    assert_eq!((ada.tokens, ada.compute_ms, ada.results), (200, 5_500, 3));
}

#[test]
fn compute_claims_near_2_pow_62_cannot_break_the_totals() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(&dir.path().join("canopy.db")).unwrap();
    state
        .transaction(|tx| {
            joined(tx, "mallory", Some("evil"), Some("XX"))?;
            joined(tx, "eve", Some("evil"), Some("XX"))?;
            let task = tx.insert_task(0, TaskKind::Train, b"spec", None, 100)?;
            let lease = tx.insert_lease(task, "mallory", 0, 60_000)?;
            for compute in [u64::MAX, 1 << 62, 1 << 62] {
                tx.ledger_entry(&claim("mallory", task, lease, compute, true, u64::MAX), 1)?;
                tx.ledger_entry(&claim("mallory", task, lease, compute, false, u64::MAX), 1)?;
            }
            // Rows that got in some other way (an older coordinator, a bug) cannot break
            // the sums either: per node and per group the figures saturate.
            for peer in ["mallory", "eve"] {
                for value in [1i64 << 62, 1 << 62, i64::MAX, -1] {
                    tx.execute(
                        "INSERT INTO ledger(peer, round, task, kind, tokens, compute_ms,
                             accepted, verified, ts_ms)
                         VALUES (?1, 0, 1, 'train', ?2, ?2, 1, 'verified', 0)",
                        params![peer, value],
                    )?;
                }
            }
            Ok(())
        })
        .unwrap();
    let r = state.read();
    let totals = r.contributors().unwrap();
    assert_eq!(totals.entries, 14);
    let max = i64::MAX as u64;
    let mallory = totals
        .volunteers
        .iter()
        .find(|c| c.key.as_deref() == Some("mallory"))
        .unwrap();
    assert_eq!((mallory.compute_ms, mallory.tokens), (max, max));
    assert_eq!(mallory.results, 10);
    let evil = &totals.organisations[0];
    assert_eq!(evil.key.as_deref(), Some("evil"));
    assert_eq!(
        (evil.peers, evil.compute_ms, evil.tokens),
        (2, 2 * max, 2 * max)
    );
    assert_eq!(r.contributions(ContributorGroup::Country).unwrap().len(), 1);
}

#[test]
fn an_old_database_migrates_once_and_its_totals_come_from_its_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canopy.db");
    {
        // The tables as the code before schema version 1 created them, and a ledger
        // with a row from an unknown sender and two rows that overflow `SUM()`.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE peers (
                peer TEXT PRIMARY KEY, tier TEXT NOT NULL, name TEXT, org TEXT, country TEXT,
                reputation INTEGER NOT NULL, banned INTEGER NOT NULL DEFAULT 0,
                tokens_per_sec REAL, slots INTEGER NOT NULL DEFAULT 1,
                joined_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL);
             CREATE TABLE ledger (
                id INTEGER PRIMARY KEY, peer TEXT NOT NULL, round INTEGER NOT NULL,
                task INTEGER NOT NULL, kind TEXT NOT NULL, tokens INTEGER NOT NULL,
                compute_ms INTEGER NOT NULL, accepted INTEGER NOT NULL,
                verified TEXT NOT NULL, result_hash TEXT, reason TEXT, ts_ms INTEGER NOT NULL);
             INSERT INTO peers VALUES ('ada', 'volunteer', 'Ada', 'Inria', 'FR', 3, 0, NULL, 1, 0, 0);
             INSERT INTO peers VALUES ('lin', 'volunteer', 'Lin', NULL, 'DE', 1, 0, NULL, 1, 0, 0);
             INSERT INTO ledger(peer, round, task, kind, tokens, compute_ms, accepted, verified, ts_ms)
             VALUES ('ada', 0, 1, 'train', 100, 2000, 1, 'verified', 1),
                    ('ada', 0, 2, 'train', 100, 1000, 1, 'unchecked', 2),
                    ('lin', 0, 3, 'train', 100, 500, 0, 'failed', 3),
                    ('lin', 0, 4, 'verify', 100, 700, 1, 'verifier', 4),
                    ('stranger', 0, 5, 'train', 0, 4611686018427387904, 0, 'unchecked', 5),
                    ('stranger', 0, 5, 'train', 0, 4611686018427387904, 0, 'unchecked', 6);",
        )
        .unwrap();
    }
    let max = i64::MAX as u64;
    let check = |r: &Reader<'_>| {
        let totals = r.contributors().unwrap();
        assert_eq!(totals.entries, 6);
        let figures: Vec<_> = totals
            .volunteers
            .iter()
            .map(|c| {
                (
                    c.key.clone().unwrap(),
                    c.tokens,
                    c.tokens_verified,
                    c.compute_ms,
                )
            })
            .collect();
        assert_eq!(
            figures,
            [
                ("ada".to_string(), 200, 100, 3000),
                ("lin".to_string(), 100, 0, 1200),
                ("stranger".to_string(), 0, 0, max),
            ]
        );
        let ada = &totals.volunteers[0];
        assert_eq!(
            (ada.name.as_deref(), ada.org.as_deref(), ada.tier.as_deref()),
            (Some("Ada"), Some("Inria"), Some("volunteer"))
        );
        let orgs: Vec<_> = totals
            .organisations
            .iter()
            .map(|c| (c.key.clone(), c.peers))
            .collect();
        assert_eq!(orgs, [(Some("Inria".to_string()), 1), (None, 2)]);
    };
    // Read-only (the `ledger --totals` command beside an old coordinator): summed from
    // the ledger, without overflowing.
    check(&State::open_read_only(&path).unwrap().read());
    let state = State::open(&path).unwrap();
    assert_eq!(schema_version(&state.conn).unwrap(), SCHEMA_VERSION);
    check(&state.read());
    // Filled once: opening again changes nothing, and later rows and verdicts add up.
    drop(state);
    let mut state = State::open(&path).unwrap();
    check(&state.read());
    state
        .transaction(|tx| {
            tx.execute_batch(
                "INSERT INTO ledger(peer, round, task, kind, tokens, compute_ms, accepted, verified, ts_ms)
                 VALUES ('ada', 1, 6, 'train', 50, 10, 1, 'unchecked', 7)",
            )?;
            tx.set_ledger_verdict(2, "ada", LedgerVerdict::Verified, true, None)?;
            tx.set_ledger_verified(3, "lin", LedgerVerdict::Verified, true)
        })
        .unwrap();
    let r = state.read();
    let reference = rows_of(
        &state.conn,
        &GROUP_BY_PEER.replace("FROM ledger", "FROM ledger WHERE peer <> 'stranger'"),
    );
    let kept: Vec<_> = totals_table(&state.conn)
        .into_iter()
        .filter(|(p, _)| p != "stranger")
        .collect();
    assert_eq!(kept, reference);
    let ada = &r.contributions(ContributorGroup::Peer).unwrap()[0];
    assert_eq!(
        (ada.tokens, ada.tokens_verified, ada.verified),
        (250, 200, 2)
    );
}

#[test]
fn a_million_ledger_rows_keep_totals_equal_to_a_group_by() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(&dir.path().join("canopy.db")).unwrap();
    state
        .transaction(|tx| {
            // 997 nodes; the last ten never joined (rows from before that rule).
            for i in 0..987 {
                let org = ["Inria", "BigScience", "HF"];
                let country = ["FR", "DE", "US", "JP"];
                joined(
                    tx,
                    &format!("peer-{i}"),
                    (i % 4 != 0).then(|| org[i % 3]),
                    (i % 5 != 0).then(|| country[i % 4]),
                )?;
            }
            tx.execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
                 INSERT INTO ledger(peer, round, task, kind, tokens, compute_ms, accepted,
                                    verified, result_hash, reason, ts_ms)
                 SELECT 'peer-' || (i % 997), i % 50, i / 2,
                        CASE WHEN i % 5 = 0 THEN 'verify' ELSE 'train' END,
                        (i % 13) * 1024, i % 7919, (i % 11) <> 0,
                        CASE i % 5 WHEN 0 THEN 'verifier' WHEN 1 THEN 'verified'
                                   ELSE 'unchecked' END,
                        NULL, NULL, i
                 FROM n;",
            )?;
            // Verdicts change after the fact, singly and in bulk; a few rows go.
            for task in (0..500_000).step_by(4_999) {
                let peer = format!("peer-{}", (2 * task) % 997);
                tx.set_ledger_verdict(task, &peer, LedgerVerdict::Failed, false, Some("re-run"))?;
                tx.set_ledger_verified(task, &peer, LedgerVerdict::Verified, true)?;
            }
            tx.execute_batch(
                "UPDATE ledger SET verified = 'failed', accepted = 0 WHERE id % 101 = 0;
                 DELETE FROM ledger WHERE id % 100003 = 0;",
            )?;
            Ok(())
        })
        .unwrap();
    let reference = rows_of(&state.conn, GROUP_BY_PEER);
    assert_eq!(reference.len(), 997);
    assert_eq!(totals_table(&state.conn), reference);
    let totals = state.read().contributors().unwrap();
    let rows: i64 = state
        .conn
        .query_row("SELECT COUNT(*) FROM ledger", [], |r| r.get(0))
        .unwrap();
    assert_eq!(totals.entries, rows as u64);
    // The groupings agree with the ledger summed through `peers` in SQL.
    for (group, key) in [
        (ContributorGroup::Country, "p.country"),
        (ContributorGroup::Organisation, "p.org"),
    ] {
        let sql = format!(
            "SELECT {key}, COUNT(DISTINCT l.peer),
                    SUM(CASE WHEN l.accepted = 1 THEN l.tokens ELSE 0 END),
                    SUM(CASE WHEN l.verified = 'verified' THEN l.tokens ELSE 0 END),
                    SUM(l.compute_ms), COUNT(*)
             FROM ledger l LEFT JOIN peers p ON p.peer = l.peer
             GROUP BY {key} ORDER BY 3 DESC, 1"
        );
        let mut stmt = state.conn.prepare(&sql).unwrap();
        let expected: Vec<(Option<String>, u64, u64, u64, u64, u64)> = stmt
            .query_map([], |r| {
                let n = |i| r.get::<_, i64>(i).map(|v| v as u64);
                Ok((r.get(0)?, n(1)?, n(2)?, n(3)?, n(4)?, n(5)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let got: Vec<_> = state
            .read()
            .contributions(group)
            .unwrap()
            .into_iter()
            .map(|c| {
                (
                    c.key,
                    c.peers,
                    c.tokens,
                    c.tokens_verified,
                    c.compute_ms,
                    c.results,
                )
            })
            .collect();
        assert_eq!(got, expected, "{group:?}");
    }
}

#[test]
fn a_write_lock_held_elsewhere_is_a_transient_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canopy.db");
    let mut state = State::open(&path).unwrap();
    state.set_busy_timeout(Duration::from_millis(50)).unwrap();
    let other = Connection::open(&path).unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO meta(key, value) VALUES ('other', '1');")
        .unwrap();
    let busy = state.transaction(|tx| tx.set_meta("k", "v")).unwrap_err();
    assert!(busy.is_transient(), "{busy}");
    assert!(state.read().meta("k").unwrap().is_none());
    other.execute_batch("COMMIT").unwrap();
    state.transaction(|tx| tx.set_meta("k", "v")).unwrap();
    // Real failures are not transient: a constraint, a damaged value, a read-only file.
    let duplicate = state
        .transaction(|tx| {
            tx.open_round(0, &Digest::of(b"m"), None, 0)?;
            tx.open_round(0, &Digest::of(b"m"), None, 0)
        })
        .unwrap_err();
    assert!(!duplicate.is_transient(), "{duplicate}");
    let corrupt = StateError::Corrupt {
        what: "test",
        reason: "damaged".into(),
    };
    assert!(!corrupt.is_transient());
    let mut ro = State::open_read_only(&path).unwrap();
    let read_only = ro.transaction(|tx| tx.set_meta("k", "w")).unwrap_err();
    assert!(!read_only.is_transient(), "{read_only}");
}

#[test]
fn write_transactions_take_the_write_lock_when_they_begin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canopy.db");
    let mut state = State::open(&path).unwrap();
    let other = Connection::open(&path).unwrap();
    other.busy_timeout(Duration::from_millis(50)).unwrap();
    state
        .transaction(|tx| {
            // A transaction that reads before it writes: another connection's write in
            // between must wait (and here time out), not invalidate this transaction.
            tx.meta("k")?;
            let theirs = other.execute("INSERT INTO meta(key, value) VALUES ('other', '1')", []);
            match theirs {
                Err(e) => assert!(StateError::from(e).is_transient()),
                Ok(_) => panic!("another connection wrote inside a write transaction"),
            }
            tx.set_meta("k", "v")
        })
        .unwrap();
    assert_eq!(state.read().meta("k").unwrap().as_deref(), Some("v"));
    assert!(state.read().meta("other").unwrap().is_none());
}
