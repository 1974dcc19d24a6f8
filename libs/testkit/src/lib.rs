//! keel-testkit: what the services' tests share, so each test says what it
//! checks instead of how to start a server. A dev-dependency only.
//!
//! Everything here fails by panicking: a test helper that cannot do its job
//! has nothing better to do than fail the test that called it, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod database;
pub mod eventually;
pub mod fakes;
pub mod http;
pub mod ports;
pub mod postgres_tls;
pub mod server;
pub mod status;
pub mod tls;

pub use database::{Backend, TestDatabase, BACKENDS};
pub use eventually::{eventually, Settled};
pub use http::{http_exchange, http_get, http_request, try_http_exchange, HttpResponse};
pub use ports::reserve_port_pair;
pub use postgres_tls::PostgresTlsFront;
pub use server::{dead_address, TestServer};
pub use status::{assert_status, expect_status};
pub use tls::TestCa;
