//! Scenarios for a server binary (`CARGO_BIN_EXE_parlor-*`): its command line, start-up line,
//! signals, descriptors and memory. [`binary_tests!`](crate::binary_tests) makes them tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{eventually, padded_healthz, publish, rss_kib, write_until_blocked, Client, PATIENCE};
use crate::startup_line;

/// Makes every scenario of this module a `#[test]` against the binary at `$bin` named
/// `$program` (e.g. `env!("CARGO_BIN_EXE_parlor-mio"), "parlor-mio"`).
#[macro_export]
macro_rules! binary_tests {
    ($bin:expr, $program:expr) => {
        $crate::binary_tests!(@each $bin, $program;
            prints_the_real_address_and_serves_it,
            sigterm_answers_held_polls_and_exits_0,
            sigint_with_nothing_open_exits_0,
            help_lists_every_flag_and_bad_flags_say_why,
            version_prints_the_version,
            environment_variables_set_flags,
            an_address_in_use_is_an_error_not_a_panic,
            running_out_of_descriptors_pauses_accepting_only,
            a_paused_connection_costs_about_its_pipeline_cap,
            a_reset_frees_a_paused_connection_at_once,
        );
    };
    (@each $bin:expr, $program:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::binary::$name($crate::testkit::binary::Bin {
                    path: $bin,
                    program: $program,
                });
            }
        )*
    };
}

/// A server binary and its program name.
#[derive(Clone, Copy, Debug)]
pub struct Bin {
    /// Its path.
    pub path: &'static str,
    /// The name it prints (`parlor-mio`).
    pub program: &'static str,
}

impl Bin {
    /// A command running the binary.
    pub fn command(self) -> Command {
        Command::new(self.path)
    }

    /// Starts the binary on a free loopback port with these extra flags.
    pub fn start(self, flags: &[&str]) -> Running {
        let mut cmd = self.command();
        cmd.args(["--listen", "127.0.0.1:0"]).args(flags);
        self.start_command(cmd)
    }

    /// Runs `cmd` (which runs the binary), reads its start-up line and learns its address.
    pub fn start_command(self, mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the start-up line");
        let addr: SocketAddr = line
            .trim_end()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("odd start-up line {line:?}"));
        assert_eq!(line, format!("{}\n", startup_line(self.program, addr)));
        Running { child, addr }
    }
}

/// The binary listening on a free port, killed if the test ends early.
pub struct Running {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Running {
    /// Sends the signal `name` (`TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits (at most [`PATIENCE`]) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's held polls, from `/metrics`.
    pub fn held_polls(&self) -> u64 {
        super::metric(self.addr, "parlor_held_polls")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn prints_the_real_address_and_serves_it(bin: Bin) {
    let server = bin.start(&[]);
    assert_ne!(server.addr.port(), 0);
    let mut c = Client::connect(server.addr);
    let r = c.get("/healthz");
    assert_eq!((r.status, r.text()), (200, "ok\n"));
    let page = c.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
}

pub fn sigterm_answers_held_polls_and_exits_0(bin: Bin) {
    let mut server = bin.start(&["--shutdown-grace", "10s"]);
    let addr = server.addr;
    let mut subs: Vec<Client> = (0..5)
        .map(|_| {
            let mut c = Client::connect(addr);
            c.send_request("GET", "/subscribe?room=main", &[], b"");
            c
        })
        .collect();
    eventually(PATIENCE, "5 held polls", || {
        (server.held_polls() >= 5).then_some(())
    });
    // An idle keep-alive connection too: it must not hold the shutdown up.
    let mut idle = Client::connect(addr);
    assert_eq!(idle.get("/healthz").status, 200);

    server.signal("TERM");
    for sub in &mut subs {
        let r = sub.read_response();
        assert!(matches!(r.status, 204 | 503), "status {}", r.status);
        if r.status == 503 {
            assert!(r.header("Retry-After").is_some());
        }
        sub.expect_closed(PATIENCE);
    }
    idle.expect_closed(PATIENCE);
    drop((subs, idle)); // the server's graceful close waits for our side to close too
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
}

pub fn sigint_with_nothing_open_exits_0(bin: Bin) {
    let mut server = bin.start(&[]);
    server.signal("INT");
    assert_eq!(server.wait_exit().code(), Some(0));
}

pub fn help_lists_every_flag_and_bad_flags_say_why(bin: Bin) {
    for help in ["--help", "-h"] {
        let out = bin.command().arg(help).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(bin.program), "{text}");
        for flag in [
            "--listen <ADDR>",
            "--poll-timeout <DUR>",
            "--max-unsent-bytes <N>",
            "--allow-origin <ORIGIN>",
            "--shutdown-grace <DUR>",
            "--version",
            "[default: 25s]",
            "[env: PARLOR_POLL_TIMEOUT=]",
            "open-file limit",
        ] {
            assert!(text.contains(flag), "{flag} missing from {help}: {text}");
        }
    }

    let bad = bin
        .command()
        .args(["--poll-timeout", "abc"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8(bad.stderr).unwrap();
    assert_eq!(
        err,
        format!(
            "{}: --poll-timeout: \"abc\" is not a duration (try 25s or 500ms)\n",
            bin.program
        )
    );
    assert!(bad.stdout.is_empty());

    let invalid = bin.command().args(["--max-headers", "0"]).output().unwrap();
    assert_eq!(invalid.status.code(), Some(2));
    let err = String::from_utf8(invalid.stderr).unwrap();
    assert_eq!(
        err,
        format!("{}: --max-headers: must be at least 1\n", bin.program)
    );

    let unknown = bin.command().arg("--no-such-flag").output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    let err = String::from_utf8(unknown.stderr).unwrap();
    assert!(err.starts_with(&format!("{}: ", bin.program)), "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
    assert!(unknown.stdout.is_empty());
}

pub fn version_prints_the_version(bin: Bin) {
    for flag in ["--version", "-V"] {
        let out = bin.command().arg(flag).output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{} {}\n", bin.program, env!("CARGO_PKG_VERSION"))
        );
    }
}

/// Every flag also comes from its `PARLOR_*` variable: here the listen address and the poll
/// timeout (a held poll is answered `204` after it); a bad value is refused like a bad flag.
pub fn environment_variables_set_flags(bin: Bin) {
    let mut cmd = bin.command();
    cmd.env("PARLOR_LISTEN", "127.0.0.1:0")
        .env("PARLOR_POLL_TIMEOUT", "200ms");
    let server = bin.start_command(cmd);
    let mut sub = Client::connect(server.addr);
    let started = Instant::now();
    let got = sub.get("/subscribe?room=env");
    assert_eq!(got.status, 204);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not the 25 s default"
    );

    let bad = bin
        .command()
        .env("PARLOR_MAX_HEADERS", "lots")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8(bad.stderr).unwrap();
    assert!(
        err.contains("--max-headers: \"lots\" is not a whole number"),
        "{err}"
    );
}

pub fn an_address_in_use_is_an_error_not_a_panic(bin: Bin) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = bin.command().args(["--listen", &addr]).output().unwrap();
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

/// The line the accept-error policy ([`crate::AcceptErrors`]) logs, once per episode, when
/// `program` runs out of file descriptors.
pub fn emfile_line(program: &str) -> String {
    format!(
        "{program}: accept failed: Too many open files (os error 24); pausing accepts for {} ms \
         at a time until one succeeds (existing connections are still served)",
        crate::ACCEPT_PAUSE.as_millis()
    )
}

/// Out of file descriptors (`EMFILE`): the server neither dies nor spins, logs it once, keeps
/// serving the connections it has, and accepts again once descriptors are free.
pub fn running_out_of_descriptors_pauses_accepting_only(bin: Bin) {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", r#"ulimit -n 40 && exec "$0" "$@""#, bin.path])
        .args(["--listen", "127.0.0.1:0", "--max-connections", "1000"])
        .stderr(Stdio::piped());
    let mut server = bin.start_command(cmd);
    let addr = server.addr;
    let stderr = BufReader::new(server.child.stderr.take().unwrap());
    let (logged_tx, logged_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("accept failed") {
                let _ = logged_tx.send(line);
            }
        }
    });

    let mut first = Client::connect(addr);
    assert_eq!(first.get("/healthz").status, 200);
    // More connections than descriptors: the kernel completes them, the server cannot accept
    // them all.
    let crowd: Vec<Client> = (0..60).map(|_| Client::connect(addr)).collect();
    let logged = logged_rx
        .recv_timeout(PATIENCE)
        .expect("an accept error logged");
    assert_eq!(logged, emfile_line(bin.program));

    // Not spinning: over one second it uses a small part of one second of CPU.
    let before = cpu_ticks(server.child.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(server.child.id()) - before;
    assert!(
        used < 50,
        "{used} ticks of CPU in 1 s while out of descriptors"
    );
    // Logged once for the whole episode.
    assert!(
        logged_rx.try_recv().is_err(),
        "the accept error was logged again"
    );

    // Existing connections are served meanwhile.
    assert_eq!(first.get("/healthz").status, 200);

    // Descriptors come back: new connections are accepted again.
    drop(crowd);
    assert_eq!(Client::connect(addr).get("/healthz").status, 200);
    drop(first);
    server.signal("TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
}

/// Connections that pipeline megabytes behind a held poll cost the server about their
/// `--max-pipeline-bytes` each (plus at most one read buffer), not what they sent: the server's
/// resident memory grows by less than 256 KiB per connection with a 64 KiB cap, while each
/// connection's writer is blocked (8 MiB sent, about 4 MiB taken by the kernel's buffers). Then
/// one publish answers every poll, and reading resumes.
pub fn a_paused_connection_costs_about_its_pipeline_cap(bin: Bin) {
    const CONNS: usize = 8;
    // Past what the kernel's socket buffers take on loopback (about 4 MiB a connection).
    const PER_CONN: usize = 8 * 1024 * 1024 / 15_050;
    let server = bin.start(&[]);
    let addr = server.addr;
    let pid = server.child.id();
    let mut clients: Vec<Client> = (0..CONNS)
        .map(|_| {
            let mut c = Client::connect(addr);
            c.send_request("GET", "/subscribe?room=rss", &[], b"");
            c
        })
        .collect();
    eventually(PATIENCE, "the held polls", || {
        (server.held_polls() >= CONNS as u64).then_some(())
    });
    let before = rss_kib(pid);
    let burst = padded_healthz(PER_CONN);
    let written: Vec<usize> = clients
        .iter()
        .map(|c| write_until_blocked(c.stream(), &burst))
        .collect();
    let grown = rss_kib(pid).saturating_sub(before);
    eprintln!(
        "{}: RSS +{grown} KiB for {CONNS} paused connections",
        bin.program
    );
    assert!(
        written.iter().all(|&w| w < burst.len()),
        "a writer was never blocked: {written:?}"
    );
    assert!(
        grown < 256 * CONNS as u64,
        "the server's RSS grew by {grown} KiB for {CONNS} paused connections"
    );

    let mut publisher = Client::connect(addr);
    assert_eq!(publish(&mut publisher, "rss", "go").status, 200);
    for c in &mut clients {
        assert_eq!(c.read_response().text(), "go");
        // Reading resumed: the pipelined requests are answered (all of them, in order, is the
        // loopback scenario's business).
        assert_eq!(c.read_response().status, 200);
    }
}

/// A client resets a connection whose reading is paused (a held poll with more than
/// `--max-pipeline-bytes` pipelined behind it): the server notices at once and frees its slot,
/// instead of at the 60 s poll timeout.
pub fn a_reset_frees_a_paused_connection_at_once(bin: Bin) {
    let server = bin.start(&["--poll-timeout", "60s", "--max-pipeline-bytes", "1024"]);
    let addr = server.addr;
    let mut c = Client::connect(addr);
    // An answer this client never reads (so closing the socket sends a reset, not a FIN), the
    // held poll, and 120 KiB behind it.
    let mut bytes =
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /subscribe?room=reset HTTP/1.1\r\nHost: localhost\r\n\r\n"
            .to_vec();
    bytes.extend(padded_healthz(8));
    c.send(&bytes);
    eventually(PATIENCE, "the held poll", || {
        (server.held_polls() == 1).then_some(())
    });
    drop(c);
    eventually(PATIENCE, "the reset connection to be freed", || {
        let open = super::metric(addr, "parlor_connections"); // counts this request's own
        (open == 1 && server.held_polls() == 0).then_some(())
    });
}
