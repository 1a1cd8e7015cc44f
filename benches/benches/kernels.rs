//! Kernel benches: f32 matrix multiply and a full BLOOM training step, on the plain-Rust CPU
//! path and on the WGSL kernels through wgpu.
//!
//! Matrix multiply runs at 1024×1024×1024 and 256×256×256 on (a) the WGSL kernel, on the
//! adapter [`Runtime::from_env`] picks (set `CANOPY_ADAPTER=software` to run it on lavapipe;
//! without a wgpu adapter the WGSL cases are skipped with a notice), (b) the [`Cpu`] backend's
//! matmul (rayon bands over `matrixmultiply`), (c) `matrixmultiply::sgemm` called directly, the
//! baseline of each group, and (d) at 256 only, a naive triple loop as the floor. Throughput is
//! `Throughput::Elements(2·m·n·k)`, so criterion's "elem/s" reads as FLOP/s.
//!
//! The training step is [`Trainer::step`] (forward, backward, clipping, AdamW) of the `tiny`
//! preset, on 4 sequences of 128 tokens with the byte vocabulary and on the demo's node step
//! (8 sequences of 64 tokens, a 4096-token BPE vocabulary); its throughput is in tokens, so
//! "elem/s" reads as tokens/s. Its baseline is the CPU path's forward pass alone.
//!
//! Attention (forward and backward) runs on the demo's shape (8 sequences of 64 tokens, 4
//! heads of 32): the CPU path on one thread against the reference (one output row at a time,
//! as the WGSL's threads, on one thread), the baseline, and the CPU path on every core.
//!
//! ```text
//! CANOPY_ADAPTER=software cargo bench -p canopy-benches --bench kernels -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;

use canopy_benches::random_update;
use canopy_shaders::kernels::attention::{
    AttentionShape, alibi_slopes, attention_backward_cpu, attention_backward_reference,
    attention_cpu, attention_reference,
};
use canopy_shaders::prelude::*;
use canopy_shaders::{
    Backend, Cpu, Gpu, MatmulShape, Model, ModelConfig, Params, Runtime, TrainConfig, Trainer,
};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The wgpu device `CANOPY_ADAPTER` picks, or `None` (with a printed notice) when the runtime
/// ends up on the CPU path or finds no adapter.
fn wgpu_device() -> Option<Gpu> {
    match Runtime::from_env() {
        Ok(Runtime::Gpu(gpu)) => {
            println!("WGSL cases run on {}", gpu.report());
            Some(*gpu)
        }
        Ok(Runtime::Cpu(_)) => {
            println!(
                "notice: the runtime picked the CPU path (set CANOPY_ADAPTER=software or gpu); \
                 skipping the WGSL cases"
            );
            None
        }
        Err(e) => {
            println!("notice: no wgpu adapter ({e}); skipping the WGSL cases");
            None
        }
    }
}

/// Waits until the device has finished everything submitted so far.
fn wait_idle(gpu: &Gpu) {
    gpu.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("device poll");
}

/// `c = a · b` with `matrixmultiply::sgemm` on the calling thread (it threads internally, up
/// to `MATMUL_NUM_THREADS` or the physical core count).
fn sgemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: the assertion keeps every access (row-major A [m, k], B [k, n], C [m, n], unit
    // column stride) inside the three slices; `c` is a unique borrow, so it overlaps neither
    // `a` nor `b`.
    #[allow(unsafe_code)]
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// The floor: the textbook i-j-k triple loop, single-threaded, f32 accumulation.
fn naive_matmul(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f32;
            for kk in 0..k {
                s += a[i * k + kk] * b[kk * n + j];
            }
            c[i * n + j] = s;
        }
    }
}

fn matmul_group(c: &mut Criterion, gpu: Option<&Gpu>, size: usize) {
    let (m, k, n) = (size, size, size);
    let shape = MatmulShape {
        m,
        k,
        n,
        ..MatmulShape::default()
    };
    let a = random_update(m * k, 10);
    let b = random_update(k * n, 11);
    let mut out = vec![0f32; m * n];
    let mut group = c.benchmark_group(format!("matmul_{size}"));
    // One "element" is one floating-point operation (a multiply-add counts two), so
    // criterion's "elem/s" reads as FLOP/s.
    group.throughput(Throughput::Elements((2 * m * n * k) as u64));
    group.sample_size(10);
    // The slow cases (lavapipe at 1024) take seconds per call: flat sampling keeps the run to
    // about ten calls instead of criterion's 55 for ten linear samples.
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("baseline_matrixmultiply_sgemm", |bench| {
        bench.iter(|| sgemm(m, k, n, black_box(&a), black_box(&b), &mut out))
    });
    let cpu = Cpu::new();
    group.bench_function("cpu_path", |bench| {
        bench.iter(|| {
            cpu.matmul(black_box(&a), black_box(&b), &mut out, shape)
                .expect("cpu matmul")
        })
    });
    if let Some(gpu) = gpu {
        let ga = gpu.upload(&a, "bench A").expect("upload A");
        let gb = gpu.upload(&b, "bench B").expect("upload B");
        let mut gc = gpu.alloc::<f32>(m * n, "bench C").expect("alloc C");
        // Compile the pipeline and check the kernel against the CPU path once.
        gpu.matmul(&ga, &gb, &mut gc, shape).expect("wgsl matmul");
        cpu.matmul(&a, &b, &mut out, shape).expect("cpu matmul");
        let got = gpu.read(&gc).expect("read C");
        let worst = got
            .iter()
            .zip(&out)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-3,
            "WGSL matmul differs from the CPU path by {worst}"
        );
        group.bench_function("wgsl", |bench| {
            bench.iter(|| {
                gpu.matmul(&ga, &gb, &mut gc, shape).expect("wgsl matmul");
                wait_idle(gpu);
            })
        });
    }
    if size <= 256 {
        group.bench_function("naive_triple_loop", |bench| {
            bench.iter(|| naive_matmul(m, k, n, black_box(&a), black_box(&b), &mut out))
        });
    }
    group.finish();
}

fn matmul(c: &mut Criterion) {
    let gpu = wgpu_device();
    matmul_group(c, gpu.as_ref(), 1024);
    matmul_group(c, gpu.as_ref(), 256);
}

/// A batch of `sequences` random token sequences and their next-token targets.
fn batch(config: &ModelConfig, sequences: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut inputs = Vec::with_capacity(sequences * config.seq_len);
    let mut targets = Vec::with_capacity(sequences * config.seq_len);
    let vocab = config.vocab as u32;
    for _ in 0..sequences {
        let seq: Vec<u32> = (0..=config.seq_len)
            .map(|_| rng.random_range(0..vocab))
            .collect();
        inputs.extend_from_slice(&seq[..config.seq_len]);
        targets.extend_from_slice(&seq[1..]);
    }
    (inputs, targets)
}

/// Benches [`Trainer::step`] on `backend` under `name`.
fn bench_step<B: Backend>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    backend: &B,
    params: &Params,
    inputs: &[u32],
    targets: &[u32],
) {
    let config = params.config();
    let sequences = inputs.len() / config.seq_len;
    let mut model = Model::new(backend, params).expect("model");
    let mut ws = model
        .workspace(backend, sequences, config.seq_len)
        .expect("workspace");
    let mut trainer = Trainer::new(backend, &model, TrainConfig::default()).expect("trainer");
    group.bench_function(BenchmarkId::new("step", name), |bench| {
        bench.iter(|| {
            trainer
                .step(backend, &mut model, &mut ws, inputs, targets)
                .expect("training step")
        })
    });
}

fn training(c: &mut Criterion) {
    let tiny = ModelConfig::tiny();
    training_group(c, "train_step_tiny_b4", tiny, 4);
    let demo = ModelConfig {
        vocab: 4096,
        seq_len: 64,
        ..tiny
    };
    training_group(c, "train_step_demo_node_b8_s64_v4096", demo, 8);
}

/// Benches a training step of `config` on `sequences` sequences.
fn training_group(c: &mut Criterion, name: &str, config: ModelConfig, sequences: usize) {
    let params = Params::init(&config, 1).expect("params");
    let (inputs, targets) = batch(&config, sequences, 2);
    let mut group = c.benchmark_group(name);
    // One "element" is one token, so "elem/s" reads as tokens/s.
    group.throughput(Throughput::Elements((sequences * config.seq_len) as u64));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    let cpu = Cpu::new();
    {
        let model = Model::new(&cpu, &params).expect("model");
        let mut ws = model
            .workspace(&cpu, sequences, config.seq_len)
            .expect("workspace");
        group.bench_function("baseline_cpu_forward_only", |bench| {
            bench.iter(|| {
                model
                    .forward(&cpu, &mut ws, black_box(&inputs), &targets)
                    .expect("forward")
            })
        });
    }
    bench_step(&mut group, "cpu_path", &cpu, &params, &inputs, &targets);
    if let Some(gpu) = wgpu_device() {
        bench_step(&mut group, "wgsl", &gpu, &params, &inputs, &targets);
    }
    group.finish();
}

/// The signature of the forward and backward attention entry points, so one loop benches
/// each implementation.
type Forward =
    fn(&[f32], &[f32], &mut [f32], &mut [f32], AttentionShape) -> canopy_shaders::Result<()>;
type Backward = fn(
    &[f32],
    &[f32],
    &[f32],
    &[f32],
    &[f32],
    &mut [f32],
    AttentionShape,
) -> canopy_shaders::Result<()>;

fn attention(c: &mut Criterion) {
    let shape = AttentionShape {
        batch: 8,
        seq: 64,
        heads: 4,
        head_dim: 32,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut uniform =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.5..1.5)).collect() };
    let qkv = uniform(shape.qkv_len());
    let dout = uniform(shape.out_len());
    let slopes = alibi_slopes(shape.heads);
    let (mut out, mut lse) = (vec![0.0; shape.out_len()], vec![0.0; shape.lse_len()]);
    attention_reference(&qkv, &slopes, &mut out, &mut lse, shape).expect("attention");
    let mut dqkv = vec![0.0; shape.qkv_len()];
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let mut group = c.benchmark_group("attention_b8_s64_h4_d32");
    group.throughput(Throughput::Elements((shape.batch * shape.seq) as u64));
    let cases: [(&str, Forward, Backward, Option<&rayon::ThreadPool>); 3] = [
        (
            "baseline_reference",
            attention_reference,
            attention_backward_reference,
            Some(&one_thread),
        ),
        (
            "cpu_path_one_thread",
            attention_cpu,
            attention_backward_cpu,
            Some(&one_thread),
        ),
        ("cpu_path", attention_cpu, attention_backward_cpu, None),
    ];
    for (name, forward, backward, pool) in cases {
        let mut run = || {
            forward(&qkv, &slopes, &mut out, &mut lse, shape).expect("forward");
            backward(&qkv, &slopes, &out, &lse, &dout, &mut dqkv, shape).expect("backward");
        };
        group.bench_function(name, |bench| {
            bench.iter(|| match pool {
                Some(pool) => pool.install(&mut run),
                None => run(),
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matmul, training, attention);
criterion_main!(benches);
