//! `cargo xtask`: the project's own commands (the cargo-xtask convention; the alias is in
//! `.cargo/config.toml`). No dependencies, so it builds in about a second.
//!
//! * `cargo xtask test [ARGS]`: installs what the test suite needs and is missing, then runs
//!   `cargo test --workspace ARGS` (`-p <package>` replaces `--workspace`).
//! * `cargo xtask setup`: only the install step.
//!
//! What the suite needs beyond the Rust toolchain: Node (given, not installed here), and
//! * from apt: `chromium` (the browser test), `redis-server` and `nginx-light` (the Redis
//!   scale-out and reverse-proxy tests); `apt-get update` runs only when one is missing, through
//!   `sudo` unless already root;
//! * from npm: `playwright-core`, by `npm ci` in tests/browser, skipped when `node_modules` is
//!   newer than the lock file.
//!
//! No test needs a cargo-installed tool (cargo-fuzz is for the fuzz smoke in `.ci/run`).
//! Nothing is ever skipped: a missing program makes its tests fail with a message naming
//! `cargo xtask test` (see `parlor_tests::require`).

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

/// apt package, and how to tell it is installed.
const APT: &[(&str, Check)] = &[
    ("chromium", Check::Chromium),
    ("redis-server", Check::Program("redis-server")),
    ("nginx-light", Check::Program("nginx")),
];

#[derive(Clone, Copy)]
enum Check {
    /// The browser test runs `$PARLOR_CHROMIUM`, else Debian's `/usr/bin/chromium`.
    Chromium,
    /// A program on `PATH` or in an `sbin` directory (nginx lives in `/usr/sbin`).
    Program(&'static str),
}

impl Check {
    fn present(self) -> bool {
        match self {
            Check::Chromium => env::var_os("PARLOR_CHROMIUM")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
                .is_file(),
            Check::Program(name) => find_program(name).is_some(),
        }
    }
}

const USAGE: &str = "usage: cargo xtask test [CARGO TEST ARGS]   install what the tests need, then cargo test --workspace
       cargo xtask setup                     only install what the tests need";

fn main() {
    let mut args = env::args_os().skip(1);
    let task = args.next();
    let rest: Vec<OsString> = args.collect();
    let result = match task.as_ref().and_then(|t| t.to_str()) {
        Some("test") => setup().and_then(|()| test(&rest)),
        Some("setup") if rest.is_empty() => setup(),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        exit(1);
    }
}

fn workspace_root() -> PathBuf {
    // `cargo run` sets it at run time; the compiled-in value is the fallback.
    let manifest = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

fn setup() -> Result<(), String> {
    if !run(Command::new("node")
        .arg("--version")
        .stdout(std::process::Stdio::null()))
    {
        return Err(
            "node is missing: install Node 20 (https://nodejs.org), then run this again".into(),
        );
    }
    let missing: Vec<&str> = APT
        .iter()
        .filter(|(_, check)| !check.present())
        .map(|(package, _)| *package)
        .collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
        if let Some((package, _)) = APT.iter().find(|(_, check)| !check.present()) {
            return Err(format!(
                "apt installed {package}, but it is still not found"
            ));
        }
    }
    npm_ci(&workspace_root().join("tests/browser"))
}

fn apt_install(packages: &[&str]) -> Result<(), String> {
    eprintln!("xtask: installing {} (apt)", packages.join(" "));
    if find_program("apt-get").is_none() {
        return Err(format!(
            "no apt-get here: install {} yourself, then run this again",
            packages.join(" ")
        ));
    }
    // `sudo` resets the environment, so the variable goes through `env`.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            Command::new("env")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("env");
            sudo
        };
        cmd.arg("DEBIAN_FRONTEND=noninteractive")
            .arg("apt-get")
            .args(args);
        cmd
    };
    if !run(&mut apt(&["update", "-q"])) {
        return Err("apt-get update failed".into());
    }
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    if !run(install.args(packages)) {
        return Err(format!("apt-get install {} failed", packages.join(" ")));
    }
    Ok(())
}

/// `npm ci` unless `node_modules` already holds what the lock file says (npm writes
/// `node_modules/.package-lock.json` last, so it is newer than the lock file it installed).
fn npm_ci(dir: &Path) -> Result<(), String> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    let fresh = dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
        && matches!((installed, modified(&dir.join("package-lock.json"))),
            (Some(i), Some(lock)) if i >= lock);
    if fresh {
        return Ok(());
    }
    eprintln!("xtask: npm ci in {}", dir.display());
    if run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir))
    {
        Ok(())
    } else {
        Err(format!("npm ci in {} failed", dir.display()))
    }
}

/// `cargo test --workspace ARGS`, exiting with its status.
fn test(args: &[OsString]) -> Result<(), String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("test").current_dir(workspace_root());
    // `--workspace` would override a `-p`; only the arguments before `--` are cargo's.
    let cargo_args = args.iter().take_while(|a| *a != "--");
    let picks_package = cargo_args
        .filter_map(|a| a.to_str())
        .any(|a| a == "-p" || a.starts_with("--package") || (a.starts_with("-p") && a.len() > 2));
    if !picks_package {
        cmd.arg("--workspace");
    }
    let status = cmd
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    exit(status.code().unwrap_or(1));
}

fn run(cmd: &mut Command) -> bool {
    cmd.status().is_ok_and(|s| s.success())
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
