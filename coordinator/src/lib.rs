//! canopy-coordinator: the peer that runs a Canopy training project.
