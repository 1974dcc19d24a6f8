//! Ports for a service that a child process binds later and keeps across
//! restarts (the tests that start, kill and restart `keel serve`).
//!
//! Port 0 cannot give those: the kernel picks such a port from its
//! ephemeral range, the range every outgoing connection draws its local
//! port from, so between the pick and the child's bind — or while a killed
//! child is down — a connection to Postgres or NATS can take it and the
//! child fails with "address already in use". Ports below that range are
//! only ever taken by a process binding them on purpose, so they are picked
//! from there, each at most once per test process.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out: above the well-known and the usual service
/// ports (Postgres 5432, Redis 6379, NATS 4222 and 8222).
const LOWEST: u16 = 10_000;

/// The kernel's default lowest ephemeral port, when /proc cannot say.
const DEFAULT_EPHEMERAL_LOW: u16 = 32_768;

/// How many picks this process has made.
static PICKS: AtomicU32 = AtomicU32::new(0);

/// A free loopback port `port` below the ephemeral range whose
/// `port + admin_offset` is free too, never handed out twice by this
/// process. `admin_offset` is at most 100.
pub fn reserve_port_pair(admin_offset: u16) -> u16 {
    assert!(
        (1..=100).contains(&admin_offset),
        "admin offset {admin_offset}"
    );
    // Picks come in blocks of 100 gRPC ports followed by the 100 ports
    // their admin servers take, so no pick's gRPC port is another's admin
    // port. Processes start at different blocks, by pid.
    let blocks = u32::from(ephemeral_low().saturating_sub(LOWEST)) / 200;
    assert!(blocks > 0, "no ports below the ephemeral range");
    let first_block = std::process::id() % blocks;
    for _ in 0..blocks * 100 {
        let pick = PICKS.fetch_add(1, Ordering::Relaxed);
        let block = (first_block + pick / 100) % blocks;
        let port = LOWEST + u16::try_from(block * 200 + pick % 100).unwrap();
        let grpc = TcpListener::bind(("127.0.0.1", port));
        let admin = TcpListener::bind(("127.0.0.1", port + admin_offset));
        if grpc.is_ok() && admin.is_ok() {
            return port;
        }
    }
    panic!("no free port pair below the ephemeral range");
}

/// The lowest port of the kernel's ephemeral range.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_LOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_distinct_free_and_below_the_ephemeral_range() {
        let picks: Vec<u16> = (0..150).map(|_| reserve_port_pair(100)).collect();
        let mut taken = std::collections::BTreeSet::new();
        for port in &picks {
            assert!(*port >= LOWEST && *port + 100 < ephemeral_low(), "{port}");
            assert!(taken.insert(*port), "{port} handed out twice");
            assert!(taken.insert(*port + 100), "{port}+100 collides");
        }
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let first = reserve_port_pair(100);
        let held = TcpListener::bind(("127.0.0.1", first + 1)).ok();
        let second = reserve_port_pair(100);
        assert_ne!(second, first);
        if held.is_some() {
            assert_ne!(second, first + 1);
        }
    }
}
