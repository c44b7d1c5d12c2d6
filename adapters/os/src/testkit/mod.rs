//! What both adapters' tests share (feature `testkit`, for their dev-dependencies only): the one
//! HTTP test client (the integration suite's [`Client`]), helpers to start a server in-process
//! or as its binary, and one set of scenarios run against each adapter.
//!
//! An adapter's test file is one macro call: [`loopback_tests!`](crate::loopback_tests) with its
//! [`Serve`] type runs every in-process scenario of [`loopback`] against it, and
//! [`binary_tests!`](crate::binary_tests) with its binary runs every scenario of [`binary`]. So
//! `parlor-mio` and `parlor-smol` are held to the same tests, written once.

pub mod binary;
pub mod loopback;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub use parlor_tests::client::Response;
pub use parlor_tests::{eventually, parse_metrics, Client};

use crate::{parse_args, CliOutcome, Runner, Serve};

/// The longest any single wait may take before a test fails (never a timing assertion: only a
/// bound so a broken server fails the test instead of hanging it).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How long a write must make no progress at all before the writer counts as blocked by the
/// server's back-pressure. Loopback moves megabytes per millisecond: a server that is reading
/// never leaves a gap this long.
pub const QUIET: Duration = Duration::from_millis(500);

/// Starts the server `S` in this process on a free loopback port with these extra flags. The
/// shutdown grace is short: a test's clients are often still open when it stops the server, and
/// a graceful close waits for them.
pub fn start<S: Serve>(flags: &[&str]) -> Runner<S> {
    let mut args = vec![
        "--listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--shutdown-grace".to_string(),
        "500ms".to_string(),
    ];
    args.extend(flags.iter().map(|s| s.to_string()));
    let Ok(CliOutcome::Run(cli)) = parse_args("parlor-test", args, 10_000) else {
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
pub fn publish(c: &mut Client, room: &str, text: &str) -> Response {
    c.exchange(
        "POST",
        &format!("/publish?room={room}"),
        &[("Content-Type", "text/plain")],
        text.as_bytes(),
    )
}

/// `n` pipelined `GET /healthz` requests, each padded with a header to about 15 KiB (under the
/// default 16 KiB head cap), so a few thousand of them are tens of MiB while their answers stay
/// small.
pub fn padded_healthz(n: usize) -> Vec<u8> {
    let one = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(15_000)
    );
    one.repeat(n).into_bytes()
}

/// Writes `bytes` to a clone of `stream` until a write makes no progress for [`QUIET`] (the
/// server stopped reading and every buffer between is full) or all is written. Returns the
/// number of bytes the kernel took.
pub fn write_until_blocked(stream: &TcpStream, bytes: &[u8]) -> usize {
    let mut writer = stream.try_clone().expect("clone the socket");
    writer.set_write_timeout(Some(QUIET)).unwrap();
    let mut written = 0;
    while written < bytes.len() {
        match writer.write(&bytes[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("write after {written} bytes: {e}"),
        }
    }
    written
}

/// The resident set size of process `pid`, in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}
