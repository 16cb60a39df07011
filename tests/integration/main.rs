//! gridsync's integration tests: one binary, shared helpers in
//! `gridsync_tests`.

#![allow(clippy::unwrap_used)]

mod bad_input;
mod convergence;
mod crash;
mod durability;
mod fuzz_replay;
mod office;
mod records;
mod scope_property;
mod server;
mod simulation;
mod sync_protocol;
