//! Fuzz target: `canopy_protocol::fuzz::message` on arbitrary bytes (seeds in `corpus/message`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = canopy_protocol::fuzz::message(data);
});
