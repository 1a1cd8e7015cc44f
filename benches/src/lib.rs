//! canopy-benches: criterion benches (`benches/*.rs`) and the comparison harness.
//!
//! Shared bench inputs live here so every bench builds them the same way.
