//! Every flag also comes from its `PARLOR_*` environment variable; the command line wins.
//!
//! One test in its own process: it sets environment variables, which every other test of the
//! process would see.

use std::time::Duration;

use parlor_os::{parse_args, CliOutcome};

fn parse(args: &[&str]) -> Result<parlor_os::Cli, String> {
    match parse_args("parlor-env", args.iter().map(|s| s.to_string()), 100) {
        Ok(CliOutcome::Run(cli)) => Ok(cli),
        Ok(CliOutcome::Print(text)) => panic!("unexpected help {text}"),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn environment_variables_set_flags_and_the_command_line_wins() {
    std::env::set_var("PARLOR_POLL_TIMEOUT", "300ms");
    std::env::set_var("PARLOR_LISTEN", "127.0.0.1:0");
    std::env::set_var("PARLOR_MAX_HEAD_BYTES", "4096");
    std::env::set_var(
        "PARLOR_ALLOW_ORIGIN",
        "https://a.example,http://b.example:8080",
    );
    std::env::set_var("PARLOR_SHUTDOWN_GRACE", "2m");
    let cli = parse(&[]).unwrap();
    assert_eq!(cli.config.poll_timeout, Duration::from_millis(300));
    assert_eq!(cli.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!(cli.config.limits.max_head, 4096);
    assert_eq!(
        cli.config.allow_origins,
        ["https://a.example", "http://b.example:8080"]
    );
    assert_eq!(cli.shutdown_grace, Duration::from_secs(120));
    assert_eq!(cli.config.max_connections, 100, "unset: the default");

    let cli = parse(&["--poll-timeout", "2s", "--allow-origin=https://c.example"]).unwrap();
    assert_eq!(cli.config.poll_timeout, Duration::from_secs(2));
    assert_eq!(cli.config.allow_origins, ["https://c.example"]);

    // A bad value from the environment is refused like one on the command line.
    std::env::set_var("PARLOR_MAX_HEADERS", "lots");
    assert_eq!(
        parse(&[]).unwrap_err(),
        r#"--max-headers: "lots" is not a whole number (try 100)"#
    );
    std::env::set_var("PARLOR_MAX_HEADERS", "0");
    assert_eq!(parse(&[]).unwrap_err(), "--max-headers: must be at least 1");
    std::env::remove_var("PARLOR_MAX_HEADERS");

    // The help shows what the environment set.
    let Ok(CliOutcome::Print(help)) = parse_args("parlor-env", ["--help".to_string()], 100) else {
        panic!("no help");
    };
    assert!(help.contains("[env: PARLOR_POLL_TIMEOUT=300ms]"), "{help}");
}
