// Per-document quality signals, bit-identical to `quality_reference` in
// `src/kernels/quality.rs` (which defines the signals). Integer arithmetic only.
//
// `text` holds the batch's bytes four to a word (little-endian); document d is bytes
// offsets[d] .. offsets[d + 1] (checked on the host before launch). One thread per document,
// in rounds: round r scans bytes r·CHUNK .. (r + 1)·CHUNK of every document, carrying the scan
// state (in `out` and `state`) from one round to the next, so that no invocation loops more
// than about CHUNK times (software Vulkan stops any invocation after 65535 loop iterations in
// all; real GPUs have watchdogs). The host runs ⌈longest document / CHUNK⌉ rounds (at least
// one) after `clear`, in one submission.
//
// The word-repetition count needs the set of word hashes seen so far: each document owns the
// slots offsets[d] + d .. offsets[d + 1] + d + 1 of `table` (n + 1 slots for n bytes, at least
// twice its word count), an open-addressing table with linear probing where 0 marks an empty
// slot; the hash 0 itself is tracked in the state.
//
// `clear`:   table[i] = 0 for every slot.
// `signals`: out[8 d + k] = signal k of document d once the last round has run;
//            state[5 d ..] = distinct hashes, zero seen, previous byte, in a word, word hash.

struct Params {
    docs: u32,
    round: u32,
    table_len: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> text: array<u32>;
@group(0) @binding(2) var<storage, read> offsets: array<u32>;
@group(0) @binding(3) var<storage, read_write> table: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;
@group(0) @binding(5) var<storage, read_write> state: array<u32>;

const CHUNK: u32 = 8192u;
const FNV_OFFSET: u32 = 0x811c9dc5u;
const FNV_PRIME: u32 = 0x01000193u;

fn byte_at(i: u32) -> u32 {
    return (text[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn is_space(b: u32) -> bool {
    return b == 0x20u || (b >= 0x09u && b <= 0x0du);
}

fn is_special(b: u32) -> bool {
    let punct = (b >= 0x21u && b <= 0x2fu) || (b >= 0x3au && b <= 0x40u)
        || (b >= 0x5bu && b <= 0x60u) || (b >= 0x7bu && b <= 0x7eu);
    let control = (b < 0x20u && !is_space(b)) || b == 0x7fu;
    return punct || control;
}

// Inserts a nonzero hash h into the table at base with `size` slots; true if it was new.
fn insert(base: u32, size: u32, h: u32) -> bool {
    var slot = h % size;
    loop {
        let v = table[base + slot];
        if (v == 0u) {
            table[base + slot] = h;
            return true;
        }
        if (v == h) {
            return false;
        }
        slot += 1u;
        if (slot == size) {
            slot = 0u;
        }
    }
    return false;
}

@compute @workgroup_size(256, 1, 1)
fn clear(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i < p.table_len) {
        table[i] = 0u;
    }
}

@compute @workgroup_size(256, 1, 1)
fn signals(
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
    let skip = p.round * CHUNK;
    if (p.round > 0u && skip >= len) {
        return;
    }
    let last_round = len - skip <= CHUNK;
    let base = start + d;
    let size = len + 1u;
    let o = d * 8u;
    let s = d * 5u;

    var words = 0u;
    var char_rep = 0u;
    var special = 0u;
    var digits = 0u;
    var upper = 0u;
    var newlines = 0u;
    var distinct = 0u;
    var zero_seen = 0u;
    var prev = 0x100u;
    var in_word = 0u;
    var h = FNV_OFFSET;
    if (p.round > 0u) {
        words = out[o + 1u];
        char_rep = out[o + 2u];
        special = out[o + 4u];
        digits = out[o + 5u];
        upper = out[o + 6u];
        newlines = out[o + 7u];
        distinct = state[s];
        zero_seen = state[s + 1u];
        prev = state[s + 2u];
        in_word = state[s + 3u];
        h = state[s + 4u];
    }

    let lo = start + skip;
    var hi = end;
    if (!last_round) {
        hi = lo + CHUNK;
    }
    // In the last round, i == end is a virtual space that ends the last word.
    var stop = hi;
    if (last_round) {
        stop = hi + 1u;
    }
    for (var i = lo; i < stop; i++) {
        var b = 0x20u;
        if (i < end) {
            b = byte_at(i);
            if (b == prev) {
                char_rep += 1u;
            }
            prev = b;
            if (is_special(b)) {
                special += 1u;
            }
            if (b >= 0x30u && b <= 0x39u) {
                digits += 1u;
            }
            if (b >= 0x41u && b <= 0x5au) {
                upper += 1u;
            }
            if (b == 0x0au) {
                newlines += 1u;
            }
        }
        if (is_space(b)) {
            if (in_word == 1u) {
                in_word = 0u;
                words += 1u;
                if (h == 0u) {
                    if (zero_seen == 0u) {
                        zero_seen = 1u;
                        distinct += 1u;
                    }
                } else if (insert(base, size, h)) {
                    distinct += 1u;
                }
            }
        } else {
            if (in_word == 0u) {
                in_word = 1u;
                h = FNV_OFFSET;
            }
            h = (h ^ b) * FNV_PRIME;
        }
    }

    out[o] = len;
    out[o + 1u] = words;
    out[o + 2u] = char_rep;
    out[o + 4u] = special;
    out[o + 5u] = digits;
    out[o + 6u] = upper;
    if (last_round) {
        out[o + 3u] = words - distinct;
        var lines = newlines;
        if (len > 0u && prev != 0x0au) {
            lines += 1u;
        }
        out[o + 7u] = lines;
    } else {
        out[o + 3u] = 0u;
        out[o + 7u] = newlines;
        state[s] = distinct;
        state[s + 1u] = zero_seen;
        state[s + 2u] = prev;
        state[s + 3u] = in_word;
        state[s + 4u] = h;
    }
}
