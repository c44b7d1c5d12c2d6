//! The real `parlor-mio` binary: its start-up line, its command line, and SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{wait_held, Client, PATIENCE};

const BIN: &str = env!("CARGO_BIN_EXE_parlor-mio");

/// Kills the child if a test fails before it exits on its own.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(flags: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn parlor-mio");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("read the start-up line");
    let rest = line
        .trim_end()
        .strip_prefix("parlor-mio listening on http://")
        .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"));
    let addr: SocketAddr = rest.parse().expect("an address in the start-up line");
    assert_eq!(
        line,
        format!(
            "{}\n",
            parlor_core::config::startup_line("parlor-mio", addr)
        )
    );
    Server { child, addr }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "parlor-mio did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{name} failed");
}

#[test]
fn prints_the_real_address_and_serves_it() {
    let server = spawn(&[]);
    assert_ne!(server.addr.port(), 0);
    let mut c = Client::connect(server.addr);
    c.get("/healthz");
    let r = c.response();
    assert_eq!((r.status, r.text()), (200, "ok\n"));
    c.get("/");
    let page = c.response();
    assert_eq!(page.status, 200);
    assert!(page
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
}

#[test]
fn sigterm_answers_held_polls_and_exits_0() {
    let mut server = spawn(&["--shutdown-grace", "10s"]);
    let addr = server.addr;
    let mut subs: Vec<Client> = (0..5)
        .map(|_| {
            let mut c = Client::connect(addr);
            c.get("/subscribe?room=main");
            c
        })
        .collect();
    wait_held(addr, 5);
    // An idle keep-alive connection too: it must not hold the shutdown up.
    let mut idle = Client::connect(addr);
    idle.get("/healthz");
    assert_eq!(idle.response().status, 200);

    signal(&server.child, "TERM");
    for sub in &mut subs {
        let r = sub.response();
        assert!(matches!(r.status, 204 | 503), "status {}", r.status);
        if r.status == 503 {
            assert!(r.header("Retry-After").is_some());
        }
        assert!(sub.is_closed_by_server());
    }
    assert!(idle.is_closed_by_server());
    drop((subs, idle));
    let status = wait_exit(&mut server.child);
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn sigint_with_nothing_open_exits_0() {
    let mut server = spawn(&[]);
    signal(&server.child, "INT");
    assert_eq!(wait_exit(&mut server.child).code(), Some(0));
}

#[test]
fn help_lists_flags_and_bad_flags_say_why() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--listen",
        "--poll-timeout",
        "--max-unsent-bytes",
        "--shutdown-grace",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }

    let bad = Command::new(BIN)
        .args(["--poll-timeout", "abc"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8(bad.stderr).unwrap();
    assert!(
        err.contains(r#"--poll-timeout: "abc" is not a duration"#),
        "{err}"
    );
    assert!(bad.stdout.is_empty());

    let unknown = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn an_address_in_use_is_an_error_not_a_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot listen on"), "{err}");
}
