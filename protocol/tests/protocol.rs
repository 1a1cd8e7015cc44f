//! Integration tests of canopy-protocol's decoders as a receiver meets them: the fuzz seed
//! corpus, mutated frames, and hostile length prefixes measured with a counting allocator.

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use canopy_protocol::fuzz::{self, Outcome, TARGETS, Target};
use canopy_protocol::{CodecSpec, Compressor, Envelope, Keypair, Manifest, Message, ObjectKind};
use proptest::prelude::*;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// Records the largest single allocation made on the current thread.
struct Counting;

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The largest single allocation `f` makes on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// The seed files are what `fuzz::seeds()` builds, valid seeds are accepted, bad ones rejected.
#[test]
fn seed_corpus_is_current_and_judged_right() {
    let seeds = fuzz::seeds().unwrap();
    for (target, run) in TARGETS {
        let mine: Vec<_> = seeds.iter().filter(|s| s.target == *target).collect();
        assert!(mine.len() >= 2, "target {target} needs seeds");
        for seed in mine {
            let path = corpus_dir().join(target).join(&seed.name);
            let on_disk = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run the fuzz_seeds example", path.display()));
            assert_eq!(
                on_disk,
                seed.data,
                "{} is stale; run `cargo run -p canopy-protocol --example fuzz_seeds`",
                path.display()
            );
            let expected = if seed.should_accept() {
                Outcome::Accepted
            } else {
                Outcome::Rejected
            };
            assert_eq!(run(&seed.data), expected, "{target}/{}", seed.name);
        }
    }
}

/// The fuzz targets' smoke run: every seed file, then a few thousand deterministic mutations
/// of each (bit flips, byte overwrites, truncations, extensions), none of which may panic.
#[test]
fn fuzz_targets_smoke_over_seed_corpus() {
    let mut runs = 0usize;
    for (target, run) in TARGETS {
        let dir = corpus_dir().join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds for {target}");
        for file in files {
            let seed = std::fs::read(&file).unwrap();
            run(&seed);
            let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed.len() as u64;
            for i in 0..400 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let r = (state >> 33) as usize;
                let mut m = seed.clone();
                match i % 4 {
                    0 if !m.is_empty() => {
                        let bit = r % (m.len() * 8);
                        m[bit / 8] ^= 1 << (bit % 8);
                    }
                    1 if !m.is_empty() => {
                        let at = r % m.len();
                        m[at] = (state >> 17) as u8;
                    }
                    2 => m.truncate(r % (m.len() + 1)),
                    _ => m.extend(std::iter::repeat_n((r & 0xff) as u8, r % 9)),
                }
                run(&m);
                runs += 1;
            }
        }
    }
    assert!(runs > 5000);
}

/// Overwrites the u64 length prefix at `at` with `claim`.
fn claim_length(mut frame: Vec<u8>, at: usize, claim: u64) -> Vec<u8> {
    frame[at..at + 8].copy_from_slice(&claim.to_le_bytes());
    frame
}

/// A length prefix that claims far more than the frame holds is refused, and the decoder never
/// allocates anywhere near the claim: at most 16 times the frame's own size.
#[test]
fn oversized_length_prefix_refused_without_allocating() {
    let keys = Keypair::from_secret_bytes(&[1; 32]);
    let payload_msg = Message::ChunkResponse(canopy_protocol::messages::ChunkResponse {
        id: canopy_protocol::Digest::of(b"x"),
        data: Some(vec![7; 100]),
    });
    let env = Envelope::seal(&keys, 1, 1, &payload_msg).unwrap();
    let frame = env.to_frame().unwrap();
    let payload_len = env.verify().unwrap().payload().len();
    let payload_prefix = frame.len() - payload_len - 8;

    let update = Compressor::new(CodecSpec::default(), 64)
        .unwrap()
        .compress(&[0.5; 64])
        .unwrap();
    let update_frame = update.to_frame().unwrap();
    let body_prefix = update_frame.len() - update.body.len() - 8;

    let manifest = Manifest::build(ObjectKind::Update, &[3; 3000], 1024, Default::default())
        .unwrap()
        .sign(&keys)
        .unwrap()
        .to_frame()
        .unwrap();
    // version byte, kind (u32), total_len (u64), chunk_size (u32), then the chunk count.
    let chunks_prefix = 1 + 4 + 8 + 4;

    for claim in [1u64 << 20, 1 << 32, 1 << 40, u64::MAX] {
        let cases: [(&str, Vec<u8>, Target); 3] = [
            (
                "envelope payload",
                claim_length(frame.clone(), payload_prefix, claim),
                fuzz::envelope,
            ),
            (
                "update body",
                claim_length(update_frame.clone(), body_prefix, claim),
                fuzz::update,
            ),
            (
                "manifest chunks",
                claim_length(manifest.clone(), chunks_prefix, claim),
                fuzz::manifest,
            ),
        ];
        for (what, hostile, run) in cases {
            let (outcome, largest) = largest_allocation(|| run(&hostile));
            assert_eq!(outcome, Outcome::Rejected, "{what} claiming {claim}");
            assert!(
                largest <= 16 * hostile.len().max(256),
                "{what} claiming {claim} bytes allocated {largest} bytes for a {}-byte frame",
                hostile.len()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes never panic any decoder, and are essentially never accepted.
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for (_, run) in TARGETS {
            run(&data);
        }
        prop_assert_eq!(fuzz::envelope(&data), Outcome::Rejected);
    }

    /// Every strict prefix of a valid frame is rejected by its decoder.
    #[test]
    fn truncated_frames_rejected(cut: prop::sample::Index) {
        for seed in fuzz::seeds().unwrap().into_iter().filter(|s| s.should_accept()) {
            let run = TARGETS.iter().find(|(t, _)| *t == seed.target).unwrap().1;
            let at = cut.index(seed.data.len());
            prop_assert_eq!(run(&seed.data[..at]), Outcome::Rejected, "{}/{} cut at {}", seed.target, seed.name, at);
        }
    }
}
