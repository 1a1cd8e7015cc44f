//! Fuzz target: `canopy_protocol::fuzz::governance` on arbitrary bytes (seeds in `corpus/governance`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = canopy_protocol::fuzz::governance(data);
});
