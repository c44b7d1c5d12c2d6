//! Behind nginx: the configuration of docs/deploy.md (its TLS and redirect parts left out, on a
//! free loopback port) in front of each server, started with `--trusted-proxy 127.0.0.1`.
//!
//! * a publish with the browser's `Origin` goes through (nginx's `Host $host` drops the port; the
//!   forwarded host and port make it same-origin again), and a poll through nginx receives it;
//! * a direct client's `X-Forwarded-For` is ignored;
//! * the publish rate limit counts each client behind nginx: the test's clients connect to nginx
//!   from 127.0.0.2 and 127.0.0.3, so nginx forwards two different addresses;
//! * `--max-connections-per-ip` counts the polls each client behind nginx holds, not nginx's
//!   connections;
//! * the chat page in Chromium through nginx (tests/browser/proxy.mjs), over the event stream and
//!   over long-polling: load, send from the form, receive in a second page.
//!
//! Needs Debian's `nginx-light` (and for the page, `chromium` and `npm ci` in tests/browser):
//! `cargo xtask test` installs them. When one is missing the test fails and says so.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use parlor_tests::server::workspace_root;
use parlor_tests::{both, require_program, Kind, Server, PROMPT, SETUP_COMMAND};

both!(
    publish_through_nginx_with_the_browser_origin,
    a_direct_client_cannot_spoof_its_address,
    the_rate_limit_counts_each_client_behind_nginx,
    the_connection_cap_counts_each_client_behind_nginx,
    chat_page_in_chromium_through_nginx,
);

/// nginx in front of one server, from the configuration in docs/deploy.md.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    /// Starts nginx on a free port of 127.0.0.1, proxying to `upstream`, and waits until it
    /// answers `/healthz` through the proxy.
    fn start(upstream: SocketAddr) -> Nginx {
        let nginx = require_program("nginx", "the reverse-proxy test (tests/tests/proxy.rs)");
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "parlor-nginx-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).expect("create the nginx directory");
        let log = dir.join("logs/error.log");
        // A port picked by the kernel, released for nginx: another process could take it in
        // between, so a start that finds it taken is retried with a new one.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, main_conf(&dir, &site_conf(upstream, port)))
                .expect("write nginx.conf");
            let mut child = Command::new(&nginx)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("run {}: {e}", nginx.display()));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if wait_ready(&mut child, addr, &log) {
                return Nginx { child, dir, port };
            }
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                text.contains("Address already in use"),
                "nginx did not start:\n{text}"
            );
        }
        panic!("nginx found no free port in 5 tries");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr())
    }
}

/// Waits until a request through nginx at `addr` reaches Parlor; false if nginx exited.
fn wait_ready(child: &mut Child, addr: SocketAddr, log: &Path) -> bool {
    let deadline = Instant::now() + PROMPT;
    loop {
        if child.try_wait().expect("wait for nginx").is_some() {
            return false;
        }
        if let Ok((200, _)) = http(None, addr, "GET", "/healthz", &[], "") {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "nginx did not answer within {PROMPT:?}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `master_process off`: one process, so killing it leaves no worker behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The site configuration of docs/deploy.md (its first `nginx` block), for the test: the
/// upstream is the one server under test, the HTTP-to-HTTPS redirect is left out, and the TLS
/// server listens in plain HTTP on `127.0.0.1:port`.
fn site_conf(upstream: SocketAddr, port: u16) -> String {
    let doc = std::fs::read_to_string(workspace_root().join("docs/deploy.md"))
        .expect("read docs/deploy.md");
    let block = doc
        .split("```nginx\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("docs/deploy.md has an nginx block");
    let mut out = String::new();
    let mut upstream_done = false;
    for part in top_level_blocks(block) {
        if part.contains("return 301") {
            continue; // the redirect to HTTPS
        }
        for line in part.lines() {
            let t = line.trim();
            let upstream_server = t.starts_with("server ") && t.ends_with(';');
            if upstream_server {
                if !upstream_done {
                    out.push_str(&format!("    server {upstream};\n"));
                    upstream_done = true;
                }
            } else if t.starts_with("listen [::]") || t.starts_with("ssl_") {
            } else if t.starts_with("listen 443") {
                out.push_str(&format!("    listen 127.0.0.1:{port};\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(
        upstream_done && out.contains("proxy_pass http://parlor;"),
        "docs/deploy.md's nginx block changed shape:\n{out}"
    );
    out
}

/// Splits an nginx configuration into its top-level parts (a directive, or a block with its
/// body), comments and blank lines going with the part after them.
fn top_level_blocks(conf: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for line in conf.lines() {
        current.push_str(line);
        current.push('\n');
        let code = line.split('#').next().unwrap_or("");
        depth += code.matches('{').count();
        depth = depth.saturating_sub(code.matches('}').count());
        if depth == 0 && (code.trim_end().ends_with('}') || code.trim_end().ends_with(';')) {
            parts.push(std::mem::take(&mut current));
        }
    }
    parts.push(current);
    parts
}

/// A whole nginx.conf around the site configuration, with every path inside `dir`.
fn main_conf(dir: &Path, site: &str) -> String {
    let d = dir.display();
    format!(
        "master_process off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/logs/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         access_log off;\n\
         client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n\
         {site}\n\
         }}\n"
    )
}

/// One request with `Connection: close` from the local address `from` (any loopback address;
/// `None`: let the kernel choose), read to the end: the status and the body.
fn http(
    from: Option<Ipv4Addr>,
    to: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = connect(from, to)?;
    stream.set_read_timeout(Some(PROMPT * 4))?;
    let mut request = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {to}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {answer:?}")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A TCP connection to `to` from the local address `from`.
fn connect(from: Option<Ipv4Addr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect_timeout(&to, PROMPT);
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(IpAddr::V4(from), 0).into())?;
    socket.connect_timeout(&to.into(), PROMPT)?;
    Ok(socket.into())
}

/// A text publish of `text` to room `room` from `from` through `to`.
fn publish(
    from: Option<Ipv4Addr>,
    to: SocketAddr,
    room: &str,
    headers: &[(&str, &str)],
    text: &str,
) -> u16 {
    let mut all = vec![("Content-Type", "text/plain; charset=utf-8")];
    all.extend_from_slice(headers);
    let target = format!("/publish?room={room}");
    match http(from, to, "POST", &target, &all, text) {
        Ok((status, _)) => status,
        Err(e) => panic!("publish to {to} from {from:?}: {e}"),
    }
}

const CLIENT_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const CLIENT_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn publish_through_nginx_with_the_browser_origin(kind: Kind) {
    let server = Server::with_args(kind, &["--trusted-proxy", "127.0.0.1"]);
    let nginx = Nginx::start(server.addr());
    let origin = nginx.url();
    // A poll through nginx, held until the publish.
    let poll = {
        let to = nginx.addr();
        std::thread::spawn(move || http(Some(CLIENT_B), to, "GET", "/subscribe?room=p", &[], ""))
    };
    server.wait_held(1);
    let browser = [("Origin", origin.as_str())];
    assert_eq!(
        publish(Some(CLIENT_A), nginx.addr(), "p", &browser, "hi"),
        200
    );
    let (status, body) = poll
        .join()
        .expect("poll thread")
        .expect("poll through nginx");
    assert_eq!((status, body.as_str()), (200, "hi"));
    // Another site's page still may not publish.
    let evil = [("Origin", "http://evil.example")];
    assert_eq!(publish(Some(CLIENT_A), nginx.addr(), "p", &evil, "x"), 403);

    // The issue's bug, for contrast: without --trusted-proxy the port nginx dropped from the
    // Host makes the browser's own page cross-origin.
    let untrusting = Server::start(kind);
    let plain = Nginx::start(untrusting.addr());
    let origin = plain.url();
    let browser = [("Origin", origin.as_str())];
    assert_eq!(
        publish(Some(CLIENT_A), plain.addr(), "p", &browser, "hi"),
        403
    );
}

fn a_direct_client_cannot_spoof_its_address(kind: Kind) {
    let server = Server::with_args(
        kind,
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--publish-rate",
            "1",
            "--publish-burst",
            "3",
        ],
    );
    // Straight to Parlor from 127.0.0.2, claiming a new address each time: were the header
    // believed, every publish would have a fresh bucket and none would be refused.
    let refused = (0..50).position(|i| {
        let claim = format!("192.0.2.{}", i + 1);
        let rfc = format!("for={claim}");
        let headers = [
            ("X-Forwarded-For", claim.as_str()),
            ("Forwarded", rfc.as_str()),
        ];
        publish(Some(CLIENT_A), server.addr(), "s", &headers, "hi") == 429
    });
    assert!(
        refused.is_some_and(|i| i >= 3),
        "a direct client's X-Forwarded-For was believed (first 429 at {refused:?})"
    );
    let malformed = metric(&server, "parlor_forwarded_malformed_total");
    assert_eq!(malformed, 0.0, "an untrusted peer's headers were parsed");
}

fn the_rate_limit_counts_each_client_behind_nginx(kind: Kind) {
    let server = Server::with_args(
        kind,
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--publish-rate",
            "1",
            "--publish-burst",
            "5",
        ],
    );
    let nginx = Nginx::start(server.addr());
    // Client A publishes until refused (its burst of 5, plus what refilled meanwhile).
    let a_refused = (0..50)
        .position(|_| publish(Some(CLIENT_A), nginx.addr(), "r", &[], "a") == 429)
        .expect("client A was never rate-limited");
    assert!(a_refused >= 5, "client A refused after {a_refused}");
    // Client B, right after, has a full bucket of its own: five at once. Had Parlor counted
    // nginx's address, B would share A's empty bucket (one token per second).
    for i in 0..5 {
        let status = publish(Some(CLIENT_B), nginx.addr(), "r", &[], "b");
        assert_eq!(status, 200, "client B's publish {i} behind nginx");
    }
    // B's own X-Forwarded-For does not get it a fresh bucket: nginx appends B's address.
    let spoof = [("X-Forwarded-For", "192.0.2.200")];
    let b_refused = (0..50).any(|_| publish(Some(CLIENT_B), nginx.addr(), "r", &spoof, "b") == 429);
    assert!(b_refused, "client B escaped its limit with X-Forwarded-For");
    assert_eq!(metric(&server, "parlor_forwarded_malformed_total"), 0.0);
}

fn the_connection_cap_counts_each_client_behind_nginx(kind: Kind) {
    let server = Server::with_args(
        kind,
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--max-connections-per-ip",
            "2",
        ],
    );
    let nginx = Nginx::start(server.addr());
    let to = nginx.addr();
    let poll = move |from| {
        std::thread::spawn(move || http(Some(from), to, "GET", "/subscribe?room=c", &[], ""))
    };
    let a = [poll(CLIENT_A), poll(CLIENT_A)];
    server.wait_held(2);
    // A third poll of client A is one too many; nginx's own connections are not what counts.
    let (status, body) = http(Some(CLIENT_A), to, "GET", "/subscribe?room=c", &[], "")
        .expect("third poll through nginx");
    assert_eq!(
        (status, body.as_str()),
        (503, "too many connections from this address\n")
    );
    let b = [poll(CLIENT_B), poll(CLIENT_B)];
    server.wait_held(4);
    server.publish("c", "all");
    for p in a.into_iter().chain(b) {
        let (status, body) = p.join().expect("poll thread").expect("poll through nginx");
        assert_eq!((status, body.as_str()), (200, "all"));
    }
}

fn metric(server: &Server, name: &str) -> f64 {
    server
        .metrics()
        .iter()
        .find(|s| s.name == name && s.labels.is_empty())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .value
}

/// One browser at a time (see tests/tests/browser.rs).
static ONE_BROWSER: Mutex<()> = Mutex::new(());

fn chat_page_in_chromium_through_nginx(kind: Kind) {
    let root = workspace_root();
    let dir = root.join("tests/browser");
    let chromium = std::env::var_os("PARLOR_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let has_modules = dir
        .join("node_modules/playwright-core/package.json")
        .is_file();
    assert!(
        chromium.is_file() && has_modules,
        "the browser test through nginx needs {} and tests/browser/node_modules (npm ci). \
         Run `{SETUP_COMMAND}`.",
        chromium.display()
    );
    let node = require_program("node", "the browser test through nginx");
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::with_args(kind, &["--trusted-proxy", "127.0.0.1"]);
    let nginx = Nginx::start(server.addr());
    let shots = root.join("target/screenshots");
    let output = run_with_deadline(
        Command::new(node)
            .arg(dir.join("proxy.mjs"))
            .arg(nginx.url())
            .arg(kind.short())
            .arg(&shots),
        Duration::from_secs(120),
    );
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "proxy.mjs through nginx to {} failed ({}); its output above says why",
        kind.name(),
        output.status
    );
    // Parlor saw the page's requests come through the proxy, from the browser's address.
    let published = metric(&server, "parlor_messages_published_total");
    assert!(published >= 1.0, "no publish reached {}", kind.name());
    drop(nginx);
}

/// Runs `cmd` to its end with its output captured, killing it past `limit`.
fn run_with_deadline(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if done.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill").arg(pid.to_string()).status();
            true
        })
    };
    let _ = child.stdin.take();
    let output = child.wait_with_output().expect("wait for node");
    done.store(true, Ordering::Relaxed);
    let killed = watchdog.join().unwrap_or(false);
    assert!(!killed, "proxy.mjs did not finish within {limit:?}");
    output
}
