//! The command line of `canopy-coordinator`: its arguments ([`args`]) and each subcommand's
//! run, one module each.

pub(crate) mod args;
pub(crate) mod corpus;
pub(crate) mod demo;
pub(crate) mod invite;
pub(crate) mod project;
pub(crate) mod report;
pub(crate) mod run;
