//! End-to-end scenarios over a whole Keel on ephemeral loopback ports; each
//! runs on SQLite and on Postgres (`<scenario>::sqlite`, `<scenario>::postgres`).
//! One test binary, to keep link time down.

// Scenario helpers are not #[test] functions, but they are test code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth;
mod bad_input;
mod cache;
mod champion;
mod evaluation;
mod experiment;
mod full_loop;
mod guardrails;
mod health_and_reflection;
mod hybrid_retrieval;
mod improve;
mod limits;
mod monitoring_outage;
mod openai_api;
mod real_models;
mod replicas;
mod restart;
mod retrieval_eval;
mod shadow;
mod streaming;
mod tls;
mod traces;
mod traffic_split;
