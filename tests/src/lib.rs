//! canopy-tests: end-to-end tests of real Canopy processes and real swarms on loopback.
//!
//! Shared helpers for those tests live here (spawning binaries, waiting for conditions), so the
//! test files in `tests/` do not copy them.
