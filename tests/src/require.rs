//! External programs some tests need (chromium, node, redis-server, nginx). A test that needs one
//! calls [`require_program`] first: when the program is missing the test fails (never skips) and
//! the message names [`SETUP_COMMAND`], the README's command that installs it and runs the suite.

use std::path::PathBuf;

/// The one command that installs what the suite needs and then runs it (xtask/src/main.rs).
pub const SETUP_COMMAND: &str = "cargo xtask test";

/// The path of program `name`, searched on `PATH` and then in the `sbin` directories (Debian puts
/// nginx in `/usr/sbin`, which is not on every user's `PATH`). Panics when it is not found, saying
/// which test needs it (`why`) and how to get it.
pub fn require_program(name: &str, why: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!(
            "{why} needs `{name}`, which is not installed (not on PATH nor in /usr/sbin). \
             Run `{SETUP_COMMAND}`: it installs what the suite needs, then runs it."
        )
    })
}

/// Like [`require_program`], without the panic.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_program_every_unix_has() {
        let sh = require_program("sh", "this test");
        assert!(sh.ends_with("sh") && sh.is_file(), "{}", sh.display());
    }

    #[test]
    fn a_missing_program_fails_naming_the_setup_command() {
        let panic = std::panic::catch_unwind(|| {
            require_program("parlor-no-such-program", "the frobnicate test")
        })
        .expect_err("a missing program must fail the test");
        let message = panic
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(
            message.contains("the frobnicate test needs `parlor-no-such-program`")
                && message.contains("Run `cargo xtask test`"),
            "{message}"
        );
    }
}
