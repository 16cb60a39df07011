//! gridsync's integration tests: one binary, shared helpers in
//! `gridsync_tests`.

#![allow(clippy::unwrap_used)]

mod at_rest;
mod bad_input;
mod browser;
mod convergence;
mod crash;
mod desk;
mod durability;
mod figures;
mod files;
mod fuzz_replay;
mod hotline;
mod layering;
mod lifecycle;
mod nodes;
mod office;
mod openapi;
mod records;
mod restore;
mod scope_property;
mod search;
mod server;
mod simulation;
mod sync_protocol;
mod trust;
mod upgrade;
