//! Bounds that a long run depends on, on real swarms over loopback: a peer whose application
//! falls behind keeps answering, a flood of provider records from one peer never stops another
//! from announcing, and released objects leave the disk and the DHT. Regression tests of the
//! failures found when a project ran for hundreds of rounds (issue 17).

use std::time::Duration;

use canopy_node::network::{NetworkConfig, NetworkEvent};
use canopy_protocol::Message;
use canopy_protocol::messages::{Heartbeat, JoinAck, Tier};
use canopy_tests::harness::{signed_object, spawn_node, spawn_node_with, wait_until};
use futures::future::join_all;

fn heartbeat() -> Message {
    Message::Heartbeat(Heartbeat {
        current_task: None,
        progress: 0.0,
        tasks_done: 0,
        paused: false,
    })
}

/// The coordinator went deaf: a request whose event did not fit the application's queue was
/// dropped but its slot stayed taken, and after 1,024 such drops nothing was answered until a
/// restart. Now a request that cannot be queued is answered "busy" at once, and once the
/// application catches up the peer is answered normally again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_application_falls_behind_answers_busy_and_recovers() {
    let slow = spawn_node_with(
        &[],
        NetworkConfig {
            event_queue: 4,
            ..NetworkConfig::loopback()
        },
    )
    .await;
    let asker = spawn_node_with(
        &slow.addrs,
        NetworkConfig {
            request_timeout: Duration::from_secs(5),
            ..NetworkConfig::loopback()
        },
    )
    .await;
    let target = slow.keys.peer_id();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            asker
                .client
                .connected_peers()
                .await
                .unwrap_or_default()
                .contains(&target)
        })
        .await,
        "connected"
    );
    // Far more requests than the slow peer's pending-request cap (1,024), none read: the
    // first few fill its queue of four events (and time out, unread), every other one is
    // answered busy.
    let (mut busy, mut unanswered) = (0, 0);
    for batch in 0..12 {
        let answers =
            join_all((0..100).map(|_| asker.client.request(target, 0, heartbeat()))).await;
        for answer in answers {
            match answer {
                Ok(Message::NoWork(n)) if n.reason.contains("busy") => busy += 1,
                Err(_) => unanswered += 1,
                Ok(other) => panic!("batch {batch}: unexpected answer {other:?}"),
            }
        }
    }
    assert_eq!(busy + unanswered, 1200);
    assert!(
        unanswered <= 4,
        "{unanswered} requests were neither queued nor refused"
    );
    let status = slow.client.status().await.expect("status");
    assert!(status.pending_requests <= 4, "{status:?}");
    assert_eq!(status.refused_busy, busy);

    // The application catches up: it answers what it reads, and new requests get through.
    let mut events = slow.events;
    let client = slow.client.clone();
    let answering = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let NetworkEvent::Request { id, round, .. } = event {
                let ack = Message::JoinAck(JoinAck {
                    accepted: true,
                    tier: Tier::Volunteer,
                    round,
                    message: "answered".into(),
                    work_bits: 0,
                });
                let _ = client.respond(id, round, ack).await;
            }
        }
    });
    // Until the application has read the stale events still queued, a new request may yet
    // be answered busy (and is then asked again, as a node does); it must get through soon.
    let mut answered = None;
    for _ in 0..50 {
        match asker.client.request(target, 0, heartbeat()).await {
            Ok(Message::NoWork(n)) if n.reason.contains("busy") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => {
                answered = Some(other.expect("answered after the flood"));
                break;
            }
        }
    }
    let answered = answered.expect("still busy 10 s after the application caught up");
    assert!(
        matches!(&answered, Message::JoinAck(a) if a.message == "answered"),
        "{answered:?}"
    );
    answering.abort();
}

/// Long runs crashed: every object was announced and never withdrawn into libp2p's memory
/// store, whose 1,024 keys (remote ones included) filled after about 200 rounds, and then
/// "the store cannot contain any more provider records" stopped the coordinator. Now one peer
/// announcing more than that is capped at the receiver, the receiver still announces its own
/// objects, and released objects are withdrawn and leave the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_records_stay_bounded_and_follow_what_is_held() {
    let receiver = spawn_node(&[]).await;
    let flooder = spawn_node(&receiver.addrs).await;
    let peer = receiver.keys.peer_id();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            flooder
                .client
                .connected_peers()
                .await
                .unwrap_or_default()
                .contains(&peer)
        })
        .await
    );
    let mut roots = Vec::new();
    for seed in 0..1100u64 {
        let (manifest, data) = signed_object(&flooder.keys, 64, 1024, seed);
        roots.push(manifest.manifest().root);
        flooder
            .client
            .provide(manifest, data)
            .await
            .unwrap_or_else(|e| panic!("announcement {seed}: {e}"));
    }
    let flooded = flooder.client.status().await.expect("status");
    assert_eq!(flooded.provider_records, 1100);
    let status = receiver.client.status().await.expect("status");
    assert!(
        status.remote_provider_records <= 1024,
        "one peer's records are capped: {status:?}"
    );
    let (own, data) = signed_object(&receiver.keys, 64, 1024, 99_999);
    receiver
        .client
        .provide(own, data)
        .await
        .expect("the receiver still announces its own objects");

    // Released objects leave the flooder's disk and its provider records.
    let before = flooder.store.stats();
    let mut freed = 0;
    for root in &roots[..1000] {
        freed += flooder.client.release(*root).await.expect("release");
    }
    assert_eq!(freed, 1000 * 64);
    let after = flooder.store.stats();
    assert_eq!(after.bytes, before.bytes - 64_000);
    assert_eq!(after.objects, 100);
    let status = flooder.client.status().await.expect("status");
    assert_eq!(status.provider_records, 100, "{status:?}");
}

/// The total upload and download limits a volunteer sets hold across every peer at once, and
/// what they hold back is paced, not lost: every fetch completes, and the node's status shows
/// the limits. (A bound checked, not a speed measured: a slower machine only stays further
/// under it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_upload_and_download_limits_hold_across_peers_and_lose_nothing() {
    const LIMIT: u64 = 1 << 20;
    const CHUNK: u32 = 64 << 10;
    const LEN: usize = 3 << 20;
    let bound = |elapsed: Duration| {
        // One second's burst, one chunk of debt, and the rate since.
        (LIMIT as f64 * (elapsed.as_secs_f64() + 1.0)) as u64 + u64::from(CHUNK)
    };

    // Uploads: one provider with a total limit, two fetchers at once.
    let provider = spawn_node_with(
        &[],
        NetworkConfig {
            max_upload_bytes_per_sec: LIMIT,
            ..NetworkConfig::loopback()
        },
    )
    .await;
    let (manifest, data) = signed_object(&provider.keys, LEN, CHUNK, 7);
    provider
        .client
        .provide(manifest.clone(), data)
        .await
        .expect("provide");
    let fetchers = [
        spawn_node(&provider.addrs).await,
        spawn_node(&provider.addrs).await,
    ];
    let started = std::time::Instant::now();
    let fetched = join_all(fetchers.iter().map(|f| {
        f.client
            .fetch_from(manifest.clone(), provider.addrs.clone())
    }))
    .await;
    let elapsed = started.elapsed();
    for f in fetched {
        assert_eq!(f.expect("fetched under the upload limit").data.len(), LEN);
    }
    let status = provider.client.status().await.expect("status");
    assert_eq!(status.max_upload_bytes_per_sec, LIMIT);
    assert_eq!(status.bytes_served, 2 * LEN as u64);
    assert!(
        status.bytes_served <= bound(elapsed),
        "served {} B in {elapsed:?} under a limit of {LIMIT} B/s",
        status.bytes_served
    );

    // Downloads: one fetcher with a total limit, from two providers.
    let second = spawn_node(&provider.addrs).await;
    let (manifest, data) = signed_object(&second.keys, LEN, CHUNK, 8);
    for node in [&provider, &second] {
        node.client
            .provide(manifest.clone(), data.clone())
            .await
            .expect("provide");
    }
    let fetcher = spawn_node_with(
        &provider.addrs,
        NetworkConfig {
            max_download_bytes_per_sec: LIMIT,
            ..NetworkConfig::loopback()
        },
    )
    .await;
    let mut hints = provider.addrs.clone();
    hints.extend(second.addrs.iter().cloned());
    let started = std::time::Instant::now();
    let got = fetcher
        .client
        .fetch_from(manifest, hints)
        .await
        .expect("fetched under the download limit");
    let elapsed = started.elapsed();
    assert_eq!(got.data.len(), LEN);
    let status = fetcher.client.status().await.expect("status");
    assert_eq!(status.max_download_bytes_per_sec, LIMIT);
    assert!(
        status.bytes_fetched <= bound(elapsed),
        "fetched {} B in {elapsed:?} under a limit of {LIMIT} B/s",
        status.bytes_fetched
    );
}
