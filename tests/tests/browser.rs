//! The chat page in headless Chromium against each server: runs
//! `node tests/browser/chat.mjs <url> <server> <screenshot-dir>` (see that file for the steps).
//! Needs Debian's `chromium` and `npm ci` in tests/browser: `cargo xtask test` installs both.
//! When either is missing the test fails and says so; it never passes without a browser.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use parlor_tests::{both, server::workspace_root, Kind, Server, SETUP_COMMAND};

both!(chat_page_in_chromium);

/// One browser at a time: chat.mjs times deliveries to ten tabs against a one-second bound, and
/// two Chromiums of ten tabs each on a small machine would measure each other.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

fn chromium() -> PathBuf {
    std::env::var_os("PARLOR_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn require_browser(dir: &Path) {
    let mut missing = Vec::new();
    if !chromium().is_file() {
        missing.push(format!(
            "{} (Debian package chromium)",
            chromium().display()
        ));
    }
    if !dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push(format!("{}/node_modules (npm ci)", dir.display()));
    }
    if Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        missing.push("node".to_owned());
    }
    assert!(
        missing.is_empty(),
        "the browser test cannot run: missing {}. Run `{SETUP_COMMAND}` (installs chromium, runs npm ci in tests/browser, then runs the suite).",
        missing.join(", ")
    );
}

fn chat_page_in_chromium(kind: Kind) {
    let root = workspace_root();
    let dir = root.join("tests/browser");
    require_browser(&dir);
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    // Streams are cut by the server every few seconds, so the page's reconnect is exercised
    // (chat.mjs S3); a short retry keeps deliveries prompt across a cut.
    let server = Server::with_args(kind, &["--sse-max-age", "3s", "--sse-retry", "200ms"]);
    let shots = root.join("target/screenshots");
    let mut child = Command::new("node")
        .arg(dir.join("chat.mjs"))
        .arg(server.url())
        .arg(kind.short())
        .arg(&shots)
        // Step 5 restarts the server under the page: it kills this one and starts the binary
        // again on the same address (and stops that one when it ends).
        .env("PARLOR_SERVER_BIN", kind.binary())
        .env("PARLOR_SERVER_PID", server.pid().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    // Read its output in threads and print it through the test harness (shown on failure).
    let out = drain(child.stdout.take().expect("stdout piped"));
    let err = drain(child.stderr.take().expect("stderr piped"));
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chat.mjs against {} did not finish within 180 s",
                kind.name()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("{}", out.join().unwrap_or_default());
    eprintln!("{}", err.join().unwrap_or_default());
    assert!(
        status.success(),
        "chat.mjs against {} failed ({status}); its output above says why",
        kind.name()
    );
    let shot = shots.join(format!("chat-{}.png", kind.short()));
    assert!(shot.is_file(), "no screenshot at {}", shot.display());
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}
