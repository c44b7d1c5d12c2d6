//! Starting the server in this process, and waiting on what it reports in `/metrics`.
#![allow(dead_code)] // each test file uses its own part of this module

use std::net::SocketAddr;
use std::time::Duration;

use parlor_os::{parse_args, CliOutcome};
use parlor_smol::Runner;
use parlor_tests::{eventually, parse_metrics, Client};

/// The longest any single wait may take before a test fails (never a timing assertion: only a
/// bound so a broken server fails the test instead of hanging it).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Starts the server in this process on a free loopback port with these extra flags. The
/// shutdown grace is short: a test's clients are often still open when it stops the server, and
/// a graceful close waits for them.
pub fn start(flags: &[&str]) -> Runner {
    let mut args = vec![
        "--listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--shutdown-grace".to_string(),
        "500ms".to_string(),
    ];
    args.extend(flags.iter().map(|s| s.to_string()));
    let Ok(CliOutcome::Run(cli)) = parse_args("parlor-smol", args, 10_000) else {
        panic!("bad test flags {flags:?}");
    };
    Runner::start(cli).expect("start the server")
}

/// A gauge or counter from `/metrics` (without labels), read on a fresh connection.
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut c = Client::connect(addr);
    let r = c.exchange("GET", "/metrics", &[("Connection", "close")], b"");
    assert_eq!(r.status, 200);
    let samples = parse_metrics(r.text());
    let sample = samples
        .iter()
        .find(|s| s.name == name && s.labels.is_empty())
        .unwrap_or_else(|| panic!("no metric {name}"));
    sample.value as u64
}

/// Waits until `n` polls are held by the server.
pub fn wait_held(addr: SocketAddr, n: u64) {
    eventually(PATIENCE, &format!("{n} held polls"), || {
        (metric(addr, "parlor_held_polls") >= n).then_some(())
    });
}

/// `POST /publish?room=R` with a text body; returns the response.
pub fn publish(c: &mut Client, room: &str, text: &str) -> parlor_tests::Response {
    c.exchange(
        "POST",
        &format!("/publish?room={room}"),
        &[("Content-Type", "text/plain")],
        text.as_bytes(),
    )
}
