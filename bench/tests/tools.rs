//! Smoke test of the benchmark tools: every `parlor-load` mode runs, small and short, against
//! `parlor-baseline`, and writes its JSON line. Timings are not checked (they never are in tests).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_baseline() -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_parlor-baseline"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("parlor-baseline starts");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a start-up line");
    let url = line
        .trim()
        .strip_prefix("parlor-baseline listening on ")
        .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"))
        .to_string();
    (server, url)
}

fn load(url: &str, pid: u32, json: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_parlor-load"))
        .args(args)
        .args([
            "--url",
            url,
            "--pid",
            &pid.to_string(),
            "--label",
            "baseline",
        ])
        .arg("--json")
        .arg(json)
        .args(["--timeout", "20"])
        .output()
        .expect("parlor-load runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "parlor-load {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn every_mode_runs_against_the_baseline() {
    let (server, url) = start_baseline();
    let pid = server.0.id();
    let json =
        std::env::temp_dir().join(format!("parlor-bench-smoke-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&json);

    let idle = load(
        &url,
        pid,
        &json,
        &["idle", "-n", "50", "--settle-ms", "100"],
    );
    assert!(idle.contains("held 50,"), "{idle}");
    let fanout = load(
        &url,
        pid,
        &json,
        &["fanout", "-n", "50", "--rounds", "2", "--settle-ms", "100"],
    );
    assert!(fanout.contains("lost 0,"), "{fanout}");
    let stream = load(
        &url,
        pid,
        &json,
        &[
            "stream",
            "-n",
            "5",
            "--publishers",
            "2",
            "--duration",
            "0.5",
            "--cursor",
            "none",
        ],
    );
    assert!(stream.contains("duplicated 0,"), "{stream}");
    for request in ["get", "publish"] {
        let http = load(
            &url,
            pid,
            &json,
            &[
                "http",
                "--request",
                request,
                "--connections",
                "2",
                "--duration",
                "0.5",
            ],
        );
        assert!(http.contains("non-2xx 0,"), "{http}");
    }

    let lines = std::fs::read_to_string(&json).expect("the results file");
    let _ = std::fs::remove_file(&json);
    let modes: Vec<String> = lines
        .lines()
        .map(|l| {
            let v = serde_json::from_str::<serde_json::Value>(l).expect("a JSON line");
            v.get("mode")
                .and_then(|m| m.as_str())
                .expect("mode")
                .to_string()
        })
        .collect();
    assert_eq!(modes, ["idle", "fanout", "stream", "http", "http"]);
}

#[test]
fn refuses_a_non_loopback_target() {
    let out = Command::new(env!("CARGO_BIN_EXE_parlor-load"))
        .args(["http", "--url", "http://192.0.2.1:80", "--duration", "1"])
        .output()
        .expect("parlor-load runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-loopback"));
}
