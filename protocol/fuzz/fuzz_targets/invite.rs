//! Fuzz target: `canopy_protocol::fuzz::invite` on arbitrary bytes (seeds in `corpus/invite`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = canopy_protocol::fuzz::invite(data);
});
