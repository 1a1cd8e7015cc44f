//! Protocol benches: signing and verifying envelopes (single and batch), chunk hashing, and
//! update compression at 100M parameters. Each group has a baseline in the same run (a plain
//! copy of the same bytes) so figures can be quoted as ratios.

use std::collections::BTreeMap;
use std::hint::black_box;

use canopy_benches::{random_bytes, random_update};
use canopy_protocol::envelope::verify_batch;
use canopy_protocol::messages::{ChunkResponse, Message};
use canopy_protocol::{CodecSpec, Compressor, Digest, Envelope, Keypair, Manifest, ObjectKind};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn message(len: usize) -> Message {
    Message::ChunkResponse(ChunkResponse {
        id: Digest::of(b"bench"),
        data: Some(random_bytes(len, 1)),
    })
}

fn signatures(c: &mut Criterion) {
    let keys = Keypair::from_secret_bytes(&[7; 32]);
    let msg = message(1024);
    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Elements(1));
    group.bench_function("seal_1KiB", |b| {
        b.iter(|| Envelope::seal(&keys, 1, 1, black_box(&msg)))
    });
    let env = Envelope::seal(&keys, 1, 1, &msg).expect("seal");
    group.bench_function("verify_1KiB", |b| {
        b.iter(|| black_box(&env).verify().is_ok())
    });
    const BATCH: usize = 64;
    let batch: Vec<Envelope> = (0..BATCH)
        .map(|i| {
            let k = Keypair::from_secret_bytes(&[i as u8; 32]);
            Envelope::seal(&k, 1, i as u64, &msg).expect("seal")
        })
        .collect();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("verify_64_one_by_one", |b| {
        b.iter(|| black_box(&batch).iter().all(|e| e.verify().is_ok()))
    });
    group.bench_function("verify_64_batch", |b| {
        b.iter(|| verify_batch(black_box(&batch)).iter().all(Result::is_ok))
    });
    group.finish();
}

fn chunking(c: &mut Criterion) {
    let data = random_bytes(16 << 20, 2);
    let mut group = c.benchmark_group("chunks");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(20);
    group.bench_function("baseline_copy_16MiB", |b| {
        b.iter(|| black_box(&data).to_vec())
    });
    group.bench_function("manifest_16MiB_1MiB_chunks", |b| {
        b.iter(|| {
            Manifest::build(
                ObjectKind::ModelWeights,
                black_box(&data),
                1 << 20,
                BTreeMap::new(),
            )
        })
    });
    group.finish();
}

/// Compress + decompress of a 100M-parameter update, per codec.
fn compression(c: &mut Criterion) {
    const PARAMS: usize = 100_000_000;
    let update = random_update(PARAMS, 3);
    let mut out = vec![0f32; PARAMS];
    let mut group = c.benchmark_group("compress_100M");
    group.throughput(Throughput::Bytes((PARAMS * 4) as u64));
    group.sample_size(10);
    group.bench_function("baseline_copy", |b| {
        b.iter(|| out.copy_from_slice(black_box(&update)))
    });
    group.bench_function("baseline_alloc_copy", |b| {
        b.iter(|| black_box(&update).to_vec())
    });
    let codecs = [
        ("int8_block128", CodecSpec::Int8 { block: 128 }),
        ("f16", CodecSpec::F16),
        ("f32", CodecSpec::F32),
        (
            "topk_1pct",
            CodecSpec::TopK {
                density_ppm: 10_000,
            },
        ),
    ];
    for (name, spec) in codecs {
        let mut compressor = Compressor::new(spec, PARAMS).expect("codec");
        // Steady state: a node reuses its update buffer from round to round.
        let mut packed = compressor.compress(&update).expect("compress");
        group.bench_function(BenchmarkId::new("compress", name), |b| {
            b.iter(|| {
                compressor
                    .compress_into(black_box(&update), &mut packed)
                    .expect("compress")
            })
        });
        group.bench_function(BenchmarkId::new("decompress", name), |b| {
            b.iter(|| {
                packed
                    .decompress_into(black_box(&mut out))
                    .expect("decompress")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, signatures, chunking, compression);
criterion_main!(benches);
