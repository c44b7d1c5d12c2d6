//! The real `parlor-smol` binary: its command line, start-up line and signals.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use parlor_tests::{eventually, parse_metrics, Client};

const BIN: &str = env!("CARGO_BIN_EXE_parlor-smol");
const PATIENCE: Duration = Duration::from_secs(20);

/// The binary listening on a free port, killed if the test ends early.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Running {
    fn start(flags: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start parlor-smol");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the start-up line");
        let addr = line
            .trim_end()
            .strip_prefix("parlor-smol listening on http://")
            .unwrap_or_else(|| panic!("odd start-up line {line:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("start-up line {line:?}: {e}"));
        Running { child, addr }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "parlor-smol did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn held_polls(addr: SocketAddr) -> f64 {
    let r = Client::connect(addr).exchange("GET", "/metrics", &[("Connection", "close")], b"");
    parse_metrics(r.text())
        .iter()
        .find(|s| s.name == "parlor_held_polls")
        .expect("parlor_held_polls")
        .value
}

#[test]
fn start_up_line_names_the_real_port_and_the_page_is_served() {
    let server = Running::start(&[]);
    assert_ne!(server.addr.port(), 0);
    let page = Client::connect(server.addr).get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
}

#[test]
fn sigterm_answers_held_polls_and_exits_zero() {
    let mut server = Running::start(&[]);
    let addr = server.addr;
    let mut sub = Client::connect(addr);
    sub.send_request("GET", "/subscribe?room=bye", &[], b"");
    eventually(PATIENCE, "a held poll", || {
        (held_polls(addr) >= 1.0).then_some(())
    });

    server.signal("TERM");
    let got = sub.read_response();
    assert!(matches!(got.status, 204 | 503), "status {}", got.status);
    sub.expect_closed(PATIENCE);
    drop(sub); // the server's graceful close waits for our side to close too
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn sigint_with_nothing_open_exits_zero() {
    let mut server = Running::start(&[]);
    server.signal("INT");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn help_and_bad_flags() {
    let help = Command::new(BIN).arg("--help").output().expect("run");
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    assert!(text.contains("parlor-smol"), "{text}");
    assert!(text.contains("--poll-timeout"), "{text}");

    let bad = Command::new(BIN)
        .arg("--no-such-flag")
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8(bad.stderr).unwrap();
    assert!(err.starts_with("parlor-smol: "), "{err}");
    assert!(bad.stdout.is_empty());
}
