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
        format!("{}\n", parlor_os::startup_line("parlor-mio", addr))
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

/// CPU time (user + system) the process has used, in clock ticks (usually 1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Out of file descriptors (`EMFILE`): the loop neither dies nor spins, keeps serving the
/// connections it has, and accepts again once descriptors are free.
#[test]
fn running_out_of_descriptors_pauses_accepting_only() {
    let mut child = Command::new("bash")
        .args(["-c", r#"ulimit -n 40 && exec "$0" "$@""#, BIN])
        .args(["--listen", "127.0.0.1:0", "--max-connections", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn parlor-mio under ulimit -n 40");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim_end()
        .rsplit("http://")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("start-up line {line:?}"));
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut server = Server { child, addr };
    let (logged_tx, logged_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("accept failed") {
                let _ = logged_tx.send(line);
            }
        }
    });

    let mut first = Client::connect(addr);
    first.get("/healthz");
    assert_eq!(first.response().status, 200);
    // More connections than descriptors: the kernel completes them, the server cannot accept
    // them all.
    let crowd: Vec<Client> = (0..60).map(|_| Client::connect(addr)).collect();
    let logged = logged_rx
        .recv_timeout(PATIENCE)
        .expect("an accept error logged");
    assert!(logged.contains("pausing accepts"), "{logged}");

    // Not spinning: over one second it uses a small part of one second of CPU.
    let before = cpu_ticks(server.child.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(server.child.id()) - before;
    assert!(
        used < 50,
        "{used} ticks of CPU in 1 s while out of descriptors"
    );

    // Existing connections are served meanwhile.
    first.get("/healthz");
    assert_eq!(first.response().status, 200);

    // Descriptors come back: new connections are accepted again.
    drop(crowd);
    let mut late = Client::connect(addr);
    late.get("/healthz");
    assert_eq!(late.response().status, 200);
    drop((first, late));

    signal(&server.child, "TERM");
    assert_eq!(wait_exit(&mut server.child).code(), Some(0));
}
