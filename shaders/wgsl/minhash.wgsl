// MinHash signatures over word shingles, bit-identical to `minhash_reference` in
// `src/kernels/minhash.rs` (which defines the shingles, the hashes and the permutations).
// 32-bit integer arithmetic only; multiplication and addition wrap, as in the Rust.
//
// `text` holds the batch's bytes four to a word (little-endian); document d is bytes
// offsets[d] .. offsets[d + 1] (checked on the host before launch). Each pass runs in rounds
// (round r takes the r-th chunk of every document, carrying state between rounds) so that no
// invocation loops long: software Vulkan stops an invocation after 65535 loop iterations in
// all, and real GPUs have watchdogs. The host runs enough rounds of each pass for the longest
// document (at least one), all in one submission.
//
// `words`:     one thread per document, bytes r·WORD_CHUNK .. (r + 1)·WORD_CHUNK: word hashes
//              (FNV-1a) into shingles_out[offsets[d] + w] (a document of n bytes has at most n
//              words); state[3 d ..] = words so far, in a word, word hash.
// `shingles`:  one thread per document, shingles r·SHINGLE_CHUNK .. (r + 1)·SHINGLE_CHUNK:
//              shingle hashes in place over the word hashes (shingle j reads words j .. j + k,
//              and rounds go forward, so overwriting word j is safe).
// `signature`: one thread per (document d, permutation i), shingles of round r:
//              sig[d · num_perm + i] = min over shingles s of fmix32(a_i · s + b_i), starting
//              from 0xffffffff (which a document without shingles keeps).

struct Params {
    docs: u32,
    num_perm: u32,
    shingle: u32,
    seed_lo: u32,
    seed_hi: u32,
    round: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> text: array<u32>;
@group(0) @binding(2) var<storage, read> offsets: array<u32>;
@group(0) @binding(3) var<storage, read_write> shingles_out: array<u32>;
@group(0) @binding(4) var<storage, read_write> state_out: array<u32>;
@group(0) @binding(5) var<storage, read> shingles_in: array<u32>;
@group(0) @binding(6) var<storage, read> state_in: array<u32>;
@group(0) @binding(7) var<storage, read_write> sig: array<u32>;

const WORD_CHUNK: u32 = 8192u;
const SHINGLE_CHUNK: u32 = 1024u;
const SIGNATURE_CHUNK: u32 = 4096u;
const FNV_OFFSET: u32 = 0x811c9dc5u;
const FNV_PRIME: u32 = 0x01000193u;
const GOLDEN: u32 = 0x9e3779b9u;

fn fmix32(x: u32) -> u32 {
    var h = x;
    h ^= h >> 16u;
    h *= 0x85ebca6bu;
    h ^= h >> 13u;
    h *= 0xc2b2ae35u;
    h ^= h >> 16u;
    return h;
}

fn byte_at(i: u32) -> u32 {
    return (text[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn is_space(b: u32) -> bool {
    return b == 0x20u || (b >= 0x09u && b <= 0x0du);
}

// The number of shingles of a document of w words.
fn shingle_count(w: u32) -> u32 {
    if (w == 0u) {
        return 0u;
    }
    if (w < p.shingle) {
        return 1u;
    }
    return w - p.shingle + 1u;
}

@compute @workgroup_size(256, 1, 1)
fn words(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let d = (wg.y * nwg.x + wg.x) * 256u + li;
    if (d >= p.docs) {
        return;
    }
    let start = offsets[d];
    let end = offsets[d + 1u];
    let len = end - start;
    let skip = p.round * WORD_CHUNK;
    if (p.round > 0u && skip >= len) {
        return;
    }
    let last_round = len - skip <= WORD_CHUNK;
    let s = d * 3u;
    var count = 0u;
    var in_word = 0u;
    var h = FNV_OFFSET;
    if (p.round > 0u) {
        count = state_out[s];
        in_word = state_out[s + 1u];
        h = state_out[s + 2u];
    }
    let lo = start + skip;
    var stop = lo + WORD_CHUNK;
    if (last_round) {
        // i == end is a virtual space that ends the last word.
        stop = end + 1u;
    }
    for (var i = lo; i < stop; i++) {
        var b = 0x20u;
        if (i < end) {
            b = byte_at(i);
        }
        if (is_space(b)) {
            if (in_word == 1u) {
                in_word = 0u;
                shingles_out[start + count] = h;
                count += 1u;
            }
        } else {
            if (in_word == 0u) {
                in_word = 1u;
                h = FNV_OFFSET;
            }
            h = (h ^ b) * FNV_PRIME;
        }
    }
    state_out[s] = count;
    state_out[s + 1u] = in_word;
    state_out[s + 2u] = h;
}

@compute @workgroup_size(256, 1, 1)
fn shingles(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let d = (wg.y * nwg.x + wg.x) * 256u + li;
    if (d >= p.docs) {
        return;
    }
    let start = offsets[d];
    let w = state_out[d * 3u];
    let n = shingle_count(w);
    let k = min(p.shingle, w);
    let lo = p.round * SHINGLE_CHUNK;
    let hi = min(n, lo + SHINGLE_CHUNK);
    for (var j = lo; j < hi; j++) {
        var s = GOLDEN;
        for (var t = 0u; t < k; t++) {
            s = fmix32(s ^ shingles_out[start + j + t]);
        }
        shingles_out[start + j] = s;
    }
}

@compute @workgroup_size(256, 1, 1)
fn signature(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let t = (wg.y * nwg.x + wg.x) * 256u + li;
    if (t >= p.docs * p.num_perm) {
        return;
    }
    let d = t / p.num_perm;
    let i = t % p.num_perm;
    let n = shingle_count(state_in[d * 3u]);
    let lo = p.round * SIGNATURE_CHUNK;
    if (p.round > 0u && lo >= n) {
        return;
    }
    let hi = min(n, lo + SIGNATURE_CHUNK);
    let x = p.seed_lo ^ fmix32(p.seed_hi);
    let a = fmix32(x + (2u * i + 1u) * GOLDEN) | 1u;
    let b = fmix32(x + (2u * i + 2u) * GOLDEN);
    let start = offsets[d];
    var m = 0xffffffffu;
    if (p.round > 0u) {
        m = sig[t];
    }
    for (var j = lo; j < hi; j++) {
        m = min(m, fmix32(a * shingles_in[start + j] + b));
    }
    sig[t] = m;
}
