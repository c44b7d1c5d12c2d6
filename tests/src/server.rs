//! Starting a real server binary for one test.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::client::{Client, Response};

/// Which server binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `parlor-mio` (adapters/mio)
    Mio,
    /// `parlor-smol` (adapters/smol)
    Smol,
}

impl Kind {
    /// Package and binary name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mio => "parlor-mio",
            Kind::Smol => "parlor-smol",
        }
    }

    /// Short name: `mio`, `smol`.
    pub fn short(self) -> &'static str {
        match self {
            Kind::Mio => "mio",
            Kind::Smol => "smol",
        }
    }

    /// The path of the binary, built first if needed (see the crate docs). Panics with
    /// "binary parlor-X not built: ..." when it cannot be had.
    pub fn binary(self) -> PathBuf {
        static CELLS: [OnceLock<Result<PathBuf, String>>; 2] = [OnceLock::new(), OnceLock::new()];
        let cell = &CELLS[self as usize];
        match cell.get_or_init(|| locate(self)) {
            Ok(path) => path.clone(),
            Err(e) => panic!("{e}"),
        }
    }
}

/// The workspace root (the parent of this package). Cargo sets `CARGO_MANIFEST_DIR` when it
/// runs a test; the value compiled in is the fallback (it can name another checkout when two share
/// one target directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn locate(kind: Kind) -> Result<PathBuf, String> {
    let name = kind.name();
    let var = format!("PARLOR_{}_BIN", kind.short().to_uppercase());
    if let Some(path) = std::env::var_os(&var) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "binary {name} not built: {var}={} is not a file",
                path.display()
            ))
        };
    }
    // <target-dir>/<profile>/deps/<this test executable>
    let exe = std::env::current_exe().map_err(|e| format!("binary {name} not built: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("binary {name} not built: odd test path {}", exe.display()))?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "-p", name, "--bin", name]);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    // Build into the target directory this test runs from (CARGO_TARGET_DIR is inherited when
    // set; otherwise name it, when it is recognisably a target directory root).
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        if let Some(target_dir) = profile_dir.parent() {
            if target_dir.join("CACHEDIR.TAG").is_file() {
                cmd.arg("--target-dir").arg(target_dir);
            }
        }
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("binary {name} not built: cannot run cargo: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "binary {name} not built: `cargo build -p {name} --bin {name}` failed ({}):\n{}",
            out.status,
            tail.join("\n")
        ));
    }
    let path = profile_dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "binary {name} not built: cargo succeeded but {} does not exist",
            path.display()
        ))
    }
}

/// A running server, killed when dropped.
pub struct Server {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
    /// Wall-clock milliseconds just before the process was started and just after its start-up
    /// line: the server's epoch (the first part of every cursor) lies between them.
    started_ms: (u64, u64),
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Server {
    /// Starts `kind` on `127.0.0.1:0` with default flags.
    pub fn start(kind: Kind) -> Server {
        Server::with_args(kind, &[])
    }

    /// Starts `kind` on `127.0.0.1:0` with these extra flags, and waits for its start-up line
    /// `parlor-X listening on http://ADDR`.
    pub fn with_args(kind: Kind, args: &[&str]) -> Server {
        Server::spawn(kind, None, args)
    }

    /// Like [`Server::with_args`], with the process's open-file limit (`RLIMIT_NOFILE`) set to
    /// `nofile` (through `sh -c 'ulimit -n N; exec ...'`, so the pid is the server's).
    pub fn with_nofile(kind: Kind, nofile: u32, args: &[&str]) -> Server {
        Server::spawn(kind, Some(nofile), args)
    }

    fn spawn(kind: Kind, nofile: Option<u32>, args: &[&str]) -> Server {
        let binary = kind.binary();
        let before_ms = unix_ms();
        let mut cmd = match nofile {
            None => Command::new(&binary),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(&binary);
                c
            }
        };
        let mut child = cmd
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));

        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut pipe = child.stderr.take().expect("stderr piped");
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let mut s = stderr.lock().unwrap_or_else(|p| p.into_inner());
                    if s.len() < 1 << 20 {
                        s.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    }
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        {
            let pipe = child.stdout.take().expect("stdout piped");
            std::thread::spawn(move || {
                // The first line is the start-up line; keep draining so the server never blocks
                // on a full pipe.
                let mut lines = BufReader::new(pipe).lines();
                if let Some(Ok(line)) = lines.next() {
                    let _ = tx.send(line);
                }
                for _ in lines {}
            });
        }

        let deadline = Instant::now() + Duration::from_secs(20);
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => break line,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "{} {args:?} printed no start-up line and closed stdout (exit: {status:?}); stderr:\n{}",
                        kind.name(),
                        stderr.lock().unwrap_or_else(|p| p.into_inner())
                    );
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} {args:?} exited before its start-up line ({status}); stderr:\n{}",
                    kind.name(),
                    stderr.lock().unwrap_or_else(|p| p.into_inner())
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} {args:?} printed no start-up line within 20 s; stderr:\n{}",
                    kind.name(),
                    stderr.lock().unwrap_or_else(|p| p.into_inner())
                );
            }
        };
        let prefix = format!("{} listening on http://", kind.name());
        let addr = line
            .strip_prefix(&prefix)
            .and_then(|a| a.trim_end().parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("start-up line {line:?} is not `{prefix}ADDR`");
        };
        assert!(
            addr.ip().is_loopback() && addr.port() != 0,
            "start-up line {line:?} does not name the bound loopback port"
        );
        Server {
            kind,
            child,
            addr,
            stderr,
            exited: None,
            started_ms: (before_ms, unix_ms()),
        }
    }

    /// Asserts that `cursor` is exactly this server's cursor for message `seq` of a room: its
    /// epoch is the server's start time (base 36 milliseconds, within the moments the process was
    /// started and announced itself) and its sequence number is `seq`.
    #[track_caller]
    pub fn assert_cursor(&self, cursor: &str, seq: u64) {
        let (epoch, got) = crate::split_cursor(cursor);
        assert_eq!(got, seq, "cursor {cursor:?} is not message {seq}");
        let ms = crate::epoch_ms(epoch);
        let (lo, hi) = self.started_ms;
        assert!(
            (lo..=hi).contains(&ms),
            "cursor {cursor:?}: epoch {ms} ms is not the start of this server ({lo}..={hi} ms)"
        );
    }

    /// The server's resident set size in KiB (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("read /proc/{}/status: {e}", self.pid()));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{}/status", self.pid()))
    }

    /// Which server this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, as sent in `Host`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A new connection.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a new connection, and its response.
    #[track_caller]
    pub fn exchange(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.client().exchange(method, target, headers, body)
    }

    /// `GET target` on a new connection.
    #[track_caller]
    pub fn get(&self, target: &str) -> Response {
        self.client().get(target)
    }

    /// Publishes `text` (as `text/plain`) to `room`, asserting `200`, and returns its cursor.
    #[track_caller]
    pub fn publish(&self, room: &str, text: &str) -> String {
        let r = self.exchange(
            "POST",
            &format!("/publish?room={room}"),
            &[("Content-Type", "text/plain; charset=utf-8")],
            text.as_bytes(),
        );
        r.assert_status(200);
        r.cursor()
    }

    /// The value of the metrics sample named exactly `name` with no labels, if any.
    pub fn metrics(&self) -> Vec<crate::Sample> {
        let r = self.get("/metrics");
        r.assert_status(200);
        crate::parse_metrics(r.text())
    }

    /// Waits (at most 10 s) until the server reports at least `n` held polls in `/metrics` (the
    /// gauge whose name says "held"), so a test can publish knowing its polls are registered.
    #[track_caller]
    pub fn wait_held(&self, n: usize) {
        crate::eventually(
            Duration::from_secs(10),
            &format!("{n} held polls in /metrics"),
            || {
                let samples = self.metrics();
                let held: Vec<_> = samples.iter().filter(|s| s.name.contains("held")).collect();
                assert!(!held.is_empty(), "/metrics has no held-polls gauge");
                held.iter().any(|s| s.value >= n as f64).then_some(())
            },
        );
    }

    /// Sends a signal (`TERM`, `INT`, ...) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the process to exit, at most `within`.
    #[track_caller]
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}; stderr:\n{}",
                self.kind.name(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let err = self.stderr();
            if !err.is_empty() {
                eprintln!("--- {} stderr ---\n{err}--- end ---", self.kind.name());
            }
        }
    }
}
