//! The chat page in Chromium against two nodes (one of each binary) sharing a real Redis: two
//! pages on different nodes see each other's messages (`tests/browser/nodes.mjs`).

use std::process::Command;
use std::time::Duration;

use parlor_os::testkit_redis::RedisServer;
use parlor_tests::server::{workspace_root, Server};
use parlor_tests::{eventually, Kind};

#[test]
fn two_pages_on_two_nodes_see_each_others_messages() {
    let root = workspace_root();
    let dir = root.join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "the browser test cannot run: missing {}/node_modules (npm ci). Run `cargo xtask test`.",
        dir.display()
    );
    let redis = RedisServer::start();
    let url = redis.url();
    let nodes = [Kind::Mio, Kind::Smol].map(|kind| {
        let node = Server::with_args(kind, &["--redis", &url, "--redis-prefix", "page:"]);
        eventually(Duration::from_secs(15), "/healthz 200", || {
            (node.get("/healthz").status == 200).then_some(())
        });
        node
    });
    let out = Command::new("node")
        .arg(dir.join("nodes.mjs"))
        .arg(nodes[0].url())
        .arg(nodes[1].url())
        .output()
        .expect("run node");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "nodes.mjs failed ({}); its output above says why",
        out.status
    );
}
