//! # parlor-tests
//!
//! One integration suite, two servers. Every scenario in `tests/*.rs` is a plain function taking a
//! [`Kind`]; the [`both!`] macro turns a list of them into `mio::<scenario>` and
//! `smol::<scenario>` tests, so `parlor-mio` and `parlor-smol` are held to the same behaviour (a
//! difference between them is a bug in one of them). Filter with `cargo test -p parlor-tests mio::`.
//!
//! ## Layout
//! * [`server`]: finds (and builds) a server binary, starts it on `127.0.0.1:0` with the flags a
//!   scenario needs, learns its port from the start-up line, kills it on drop.
//! * [`client`]: a raw HTTP/1.1 client over `std::net::TcpStream` (no HTTP library), so tests write
//!   and read exact bytes: requests as written, responses framed by `Content-Length` only.
//! * [`require`]: a test that needs an external program (chromium, redis-server, nginx) checks for
//!   it first and fails, naming `cargo xtask test`, when it is missing.
//!
//! ## Finding the binaries
//! Cargo offers `CARGO_BIN_EXE_<name>` only to the tests of the binary's own package, and a
//! dependency on another package builds its library, never its binaries. So the harness does it
//! itself, once per test process and per server: it runs `cargo build -p parlor-mio --bin
//! parlor-mio` (same profile, same target directory as the running test executable, which lives
//! in `<target-dir>/<profile>/deps/`) and then runs `<target-dir>/<profile>/parlor-mio`. The build
//! is a no-op when the binary is fresh, and it means a test never runs a stale binary. A server
//! whose package does not exist or does not build makes every one of its tests fail with
//! "binary parlor-smol not built: ..." (never a silent skip). To test a binary built elsewhere, set
//! `PARLOR_MIO_BIN` / `PARLOR_SMOL_BIN` to its path; no build is attempted then.
//!
//! Timing assertions are generous upper bounds (a loaded 2-core CI machine must pass them), never
//! performance claims.

pub mod client;
pub mod require;
pub mod server;

pub use client::{request, Client, Response};
pub use require::{require_program, SETUP_COMMAND};
pub use server::{Kind, Server};

use std::time::Duration;

/// Generous bound for "answers at once" on a loaded machine.
pub const PROMPT: Duration = Duration::from_secs(10);

/// Instantiates each scenario `fn name(kind: Kind)` in scope as `mio::name` and `smol::name`.
#[macro_export]
macro_rules! both {
    ($($scenario:ident),+ $(,)?) => {
        mod mio {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario($crate::Kind::Mio)
                }
            )+
        }
        mod smol {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario($crate::Kind::Smol)
                }
            )+
        }
    };
}

/// Splits a cursor `<epoch>-<seq>` (docs/HTTP.md "Cursors") into its parts, asserting its form:
/// the epoch is lowercase base 36, the sequence a decimal number.
pub fn split_cursor(cursor: &str) -> (&str, u64) {
    let (epoch, seq) = cursor
        .split_once('-')
        .unwrap_or_else(|| panic!("cursor {cursor:?} is not <epoch>-<seq>"));
    assert!(
        !epoch.is_empty()
            && epoch
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
        "cursor {cursor:?}: epoch is not lowercase base 36"
    );
    assert!(
        !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()),
        "cursor {cursor:?}: sequence is not a decimal number"
    );
    let seq = seq
        .parse()
        .unwrap_or_else(|_| panic!("cursor {cursor:?}: sequence out of range"));
    (epoch, seq)
}

/// The milliseconds since the Unix epoch that a cursor's epoch tag (lowercase base 36) encodes.
pub fn epoch_ms(epoch: &str) -> u64 {
    epoch.bytes().fold(0u64, |acc, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'z' => b - b'a' + 10,
            _ => panic!("epoch {epoch:?} is not lowercase base 36"),
        };
        acc.checked_mul(36)
            .and_then(|a| a.checked_add(u64::from(digit)))
            .unwrap_or_else(|| panic!("epoch {epoch:?} out of range"))
    })
}

/// One sample of a Prometheus text exposition: metric name, raw label set (without braces) and
/// value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `parlor_connections`.
    pub name: String,
    /// The labels as written between the braces (empty if none), e.g. `reason="too_large"`.
    pub labels: String,
    /// The value.
    pub value: f64,
}

/// Parses a Prometheus text exposition (version 0.0.4), asserting that every line is a comment or
/// a well-formed sample.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, rest) = match line.find('}') {
            Some(close) => (&line[..=close], line[close + 1..].trim_start()),
            None => {
                let (s, r) = line
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("metrics line without a value: {line:?}"));
                (s, r.trim_start())
            }
        };
        let (name, labels) = match series.find('{') {
            Some(open) => (&series[..open], &series[open + 1..series.len() - 1]),
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad metric name in {line:?}"
        );
        let value = rest.split(' ').next().unwrap_or("");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad metric value in {line:?}")),
        };
        out.push(Sample {
            name: name.to_owned(),
            labels: labels.to_owned(),
            value,
        });
    }
    out
}

/// Polls `check` every 20 ms until it returns `Some`, panicking with `what` after `within`.
pub fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
