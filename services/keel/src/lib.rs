//! The `keel` binary as a library: `cluster` starts all five services in one
//! process (wired by real gRPC clients), `config` is the one TOML file.

pub mod cli;
pub mod cluster;
pub mod config;
