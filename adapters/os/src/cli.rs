//! The command line both server binaries share: flags, their `PARLOR_*` environment variables,
//! `--help` and `--version`.
//!
//! It is [`clap`] (derive) rather than hand-written argv parsing: `--help`, `--version`, `-h` and
//! `--flag=value` behave as Rust users expect, and its `env` feature lets every flag also come
//! from an environment variable (`--poll-timeout` from `PARLOR_POLL_TIMEOUT`), which is how
//! containers are configured. A flag on the command line wins over its variable; a repeated
//! flag overrides the earlier one, except `--allow-origin` and `--trusted-proxy`, which add to
//! their lists (their variables take a comma-separated list).
//!
//! `--help` (or `-h`) anywhere on the line wins over everything else, errors included.
//!
//! Values keep the syntax the binaries always had: a count is plain digits (no sign), a
//! duration is `250ms`, `25s`, `2m` or a plain number of seconds, an address is `IP:port`. The
//! defaults shown by `--help` are taken from [`Config::default`], so they cannot drift from it;
//! the connection cap's default is the process's open-file limit minus [`FD_RESERVE`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgMatches, CommandFactory, FromArgMatches, Parser};
use parlor_core::config::{check_host, check_origin, ConfigError};
use parlor_core::{Config, TrustedProxy};

/// File descriptors kept in reserve below the open-file limit when the binaries derive their
/// connection cap from it: the listener, the poll, the signal pipe, stdio, and some slack.
pub const FD_RESERVE: u64 = 64;

/// The default connection cap for a process whose open-file limit is `nofile`: the limit minus
/// [`FD_RESERVE`] (each connection is one descriptor), at least 1.
pub fn default_max_connections(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(FD_RESERVE).max(1)).unwrap_or(usize::MAX)
}

/// The default listen address of both binaries, `127.0.0.1:8080`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The default time a graceful shutdown waits for connections to close.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The default `--redis-prefix`.
pub const DEFAULT_REDIS_PREFIX: &str = "parlor:";

/// The parsed command line of a server binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cli {
    /// The address to listen on (`--listen`).
    pub listen: SocketAddr,
    /// The server's configuration, already validated.
    pub config: Config,
    /// How long a graceful shutdown waits for connections to close (`--shutdown-grace`).
    pub shutdown_grace: Duration,
    /// The shared message log (`--redis redis://HOST:PORT[/DB]`); `None`: rooms in memory. When
    /// set, [`Config::shared_log`] is too, and the adapter starts the broker
    /// ([`crate::shared_log`]).
    pub redis: Option<String>,
    /// What starts every Redis key and channel of this server (`--redis-prefix`).
    pub redis_prefix: String,
}

impl Cli {
    /// The defaults of every flag, with this connection cap.
    pub fn defaults(max_connections: usize) -> Cli {
        Cli {
            listen: DEFAULT_LISTEN,
            config: Config {
                max_connections,
                listen_loopback: DEFAULT_LISTEN.ip().is_loopback(),
                ..Config::default()
            },
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            redis: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
        }
    }
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // made once at start-up; boxing would only cost callers
pub enum CliOutcome {
    /// Run the server.
    Run(Cli),
    /// Print this text on stdout and exit successfully (`--help`, `-h`, `--version`).
    Print(String),
}

/// A command line that cannot be used. `Display` is the message for stderr (without the
/// program name): it names the flag and says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliError(String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

const COUNT: &str = "a whole number (try 100)";
const DURATION: &str = "a duration (try 25s or 500ms)";
const ADDR: &str = "an address (try 127.0.0.1:8080 or [::1]:8080)";

/// Every flag. The doc comment of a field is its line in `--help`; the field name is the flag
/// (`max_head_bytes` is `--max-head-bytes`, from `PARLOR_MAX_HEAD_BYTES`). No defaults here:
/// [`command`] sets them from [`Cli::defaults`].
#[derive(Parser, Debug)]
#[command(
    version,
    args_override_self = true,
    after_help = "DUR is 250ms, 25s, 2m, or a plain number of seconds. N is a whole number.\n\
                  Every flag can also be set by its PARLOR_* environment variable \
                  (--poll-timeout by PARLOR_POLL_TIMEOUT); the command line wins."
)]
struct Flags {
    /// Address and port to listen on
    #[arg(long, env = "PARLOR_LISTEN", value_name = "ADDR", value_parser = addr)]
    listen: SocketAddr,
    /// Most connections open at once (503 past it); the default is the open-file limit minus 64
    #[arg(long, env = "PARLOR_MAX_CONNECTIONS", value_name = "N", value_parser = count::<usize>)]
    max_connections: usize,
    /// Most connections from one client address, 0 = no cap (503 past it)
    #[arg(long, env = "PARLOR_MAX_CONNECTIONS_PER_IP", value_name = "N", value_parser = count::<usize>)]
    max_connections_per_ip: usize,
    /// Longest request head, in bytes (431 past it)
    #[arg(long, env = "PARLOR_MAX_HEAD_BYTES", value_name = "N", value_parser = count::<usize>)]
    max_head_bytes: usize,
    /// Most header fields in one request (431 past it)
    #[arg(long, env = "PARLOR_MAX_HEADERS", value_name = "N", value_parser = count::<usize>)]
    max_headers: usize,
    /// Longest request target, in bytes (414 past it)
    #[arg(long, env = "PARLOR_MAX_URI_BYTES", value_name = "N", value_parser = count::<usize>)]
    max_uri_bytes: usize,
    /// Largest request body, in bytes (413 past it)
    #[arg(long, env = "PARLOR_MAX_BODY_BYTES", value_name = "N", value_parser = count::<usize>)]
    max_body_bytes: usize,
    /// Bytes buffered behind a held poll before reading pauses
    #[arg(long, env = "PARLOR_MAX_PIPELINE_BYTES", value_name = "N", value_parser = count::<usize>)]
    max_pipeline_bytes: usize,
    /// A client whose unsent bytes pass this is cut off
    #[arg(long, env = "PARLOR_MAX_UNSENT_BYTES", value_name = "N", value_parser = count::<usize>)]
    max_unsent_bytes: usize,
    /// How long a poll is held before 204
    #[arg(long, env = "PARLOR_POLL_TIMEOUT", value_name = "DUR", value_parser = duration)]
    poll_timeout: Duration,
    /// Time for a request head and body to arrive (408 and close past it)
    #[arg(long, env = "PARLOR_HEAD_TIMEOUT", value_name = "DUR", value_parser = duration)]
    head_timeout: Duration,
    /// How long an idle keep-alive connection stays open
    #[arg(long, env = "PARLOR_IDLE_TIMEOUT", value_name = "DUR", value_parser = duration)]
    idle_timeout: Duration,
    /// Most rooms; a new one takes the place of the room idle longest (503 when all are in use)
    #[arg(long, env = "PARLOR_MAX_ROOMS", value_name = "N", value_parser = count::<usize>)]
    max_rooms: usize,
    /// A room with no held poll and no message for this long is freed
    #[arg(long, env = "PARLOR_ROOM_IDLE", value_name = "DUR", value_parser = duration)]
    room_idle: Duration,
    /// Messages kept per room
    #[arg(long, env = "PARLOR_HISTORY_MESSAGES", value_name = "N", value_parser = count::<usize>)]
    history_messages: usize,
    /// Bytes kept per room: each message costs its text, its id twice and 96 bytes
    #[arg(long, env = "PARLOR_HISTORY_BYTES", value_name = "N", value_parser = count::<usize>)]
    history_bytes: usize,
    /// Most messages in one JSON batch
    #[arg(long, env = "PARLOR_BATCH_MESSAGES", value_name = "N", value_parser = count::<usize>)]
    batch_messages: usize,
    /// Longest message after decoding, in bytes (413 past it)
    #[arg(long, env = "PARLOR_MAX_MESSAGE_BYTES", value_name = "N", value_parser = count::<usize>)]
    max_message_bytes: usize,
    /// Messages per second per client address, 0 = no limit (429 past it)
    #[arg(long, env = "PARLOR_PUBLISH_RATE", value_name = "N", value_parser = count::<u32>)]
    publish_rate: u32,
    /// Messages a client may publish at once before the rate applies
    #[arg(long, env = "PARLOR_PUBLISH_BURST", value_name = "N", value_parser = count::<u32>)]
    publish_burst: u32,
    /// A cross-origin Origin allowed to publish (repeatable; none by default)
    #[arg(
        long,
        env = "PARLOR_ALLOW_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ',',
        value_parser = origin
    )]
    allow_origin: Vec<String>,
    /// Reconnection delay an event stream asks its client for (retry:)
    #[arg(long, env = "PARLOR_SSE_RETRY", value_name = "DUR", value_parser = duration)]
    sse_retry: Duration,
    /// Silence after which an event stream gets a keepalive comment
    #[arg(long, env = "PARLOR_SSE_HEARTBEAT", value_name = "DUR", value_parser = duration)]
    sse_heartbeat: Duration,
    /// An event stream open this long is ended cleanly, 0 = no limit
    #[arg(long, env = "PARLOR_SSE_MAX_AGE", value_name = "DUR", value_parser = duration)]
    sse_max_age: Duration,
    /// A reverse proxy (address or CIDR network) whose Forwarded / X-Forwarded-* headers are
    /// believed (repeatable; none by default)
    #[arg(
        long,
        env = "PARLOR_TRUSTED_PROXY",
        value_name = "ADDR_OR_CIDR",
        value_delimiter = ',',
        value_parser = trusted_proxy
    )]
    trusted_proxy: Vec<TrustedProxy>,
    /// On a loopback address, a Host served besides loopback names: `name` or `name:port`
    /// (repeatable; 421 for others)
    #[arg(
        long,
        env = "PARLOR_ALLOW_HOST",
        value_name = "HOST",
        value_delimiter = ',',
        value_parser = host
    )]
    allow_host: Vec<String>,
    /// How long a graceful shutdown waits for connections to close
    #[arg(long, env = "PARLOR_SHUTDOWN_GRACE", value_name = "DUR", value_parser = duration)]
    shutdown_grace: Duration,
    /// Keep rooms in this Redis, shared by every node using it (redis://HOST:PORT[/DB]); rooms
    /// stay in memory without it
    #[arg(long, env = "PARLOR_REDIS", value_name = "URL", value_parser = redis_url)]
    redis: Option<String>,
    /// What starts every Redis key and channel of this server
    #[arg(long, env = "PARLOR_REDIS_PREFIX", value_name = "PREFIX", value_parser = redis_prefix)]
    redis_prefix: String,
    /// How long a publish (or a poll on a room new to this node) may wait for Redis before 503
    #[arg(long, env = "PARLOR_BROKER_TIMEOUT", value_name = "DUR", value_parser = duration)]
    broker_timeout: Duration,
}

/// The clap command of `program`, its defaults taken from [`Cli::defaults`].
fn command(program: &str, default_max_connections: usize) -> clap::Command {
    let d = Cli::defaults(default_max_connections);
    let c = &d.config;
    let defaults = [
        ("listen", d.listen.to_string()),
        ("max_connections", c.max_connections.to_string()),
        (
            "max_connections_per_ip",
            c.max_connections_per_ip.to_string(),
        ),
        ("max_head_bytes", c.limits.max_head.to_string()),
        ("max_headers", c.limits.max_headers.to_string()),
        ("max_uri_bytes", c.limits.max_uri.to_string()),
        ("max_body_bytes", c.limits.max_body.to_string()),
        ("max_pipeline_bytes", c.max_pipeline_bytes.to_string()),
        ("max_unsent_bytes", c.max_unsent_bytes.to_string()),
        ("poll_timeout", show_duration(c.poll_timeout)),
        ("head_timeout", show_duration(c.head_timeout)),
        ("idle_timeout", show_duration(c.idle_timeout)),
        ("max_rooms", c.max_rooms.to_string()),
        ("room_idle", show_duration(c.room_idle)),
        ("history_messages", c.history_messages.to_string()),
        ("history_bytes", c.history_bytes.to_string()),
        ("batch_messages", c.batch_messages.to_string()),
        ("max_message_bytes", c.max_message_bytes.to_string()),
        ("publish_rate", c.publish_rate.to_string()),
        ("publish_burst", c.publish_burst.to_string()),
        ("sse_retry", show_duration(c.sse_retry)),
        ("sse_heartbeat", show_duration(c.sse_heartbeat)),
        ("sse_max_age", show_duration(c.sse_max_age)),
        ("shutdown_grace", show_duration(d.shutdown_grace)),
        ("redis_prefix", d.redis_prefix.clone()),
        ("broker_timeout", show_duration(c.broker_timeout)),
    ];
    let mut cmd = Flags::command()
        .name(program.to_owned())
        .bin_name(program.to_owned())
        .about(format!("{program}: a long-polling chat server (Parlor)"));
    for (id, value) in defaults {
        cmd = cmd.mut_arg(id, |arg: Arg| arg.required(false).default_value(value));
    }
    cmd
}

/// Parses the command line of a server binary (without the program name: pass
/// `std::env::args().skip(1)`), with each flag's `PARLOR_*` environment variable as a fallback.
///
/// `program` names the binary in `--help` and `--version`; `default_max_connections` is the
/// connection cap when neither `--max-connections` nor `PARLOR_MAX_CONNECTIONS` is given (the
/// adapter derives it from the open-file limit). The resulting [`Config`] is validated.
pub fn parse_args(
    program: &str,
    args: impl IntoIterator<Item = String>,
    default_max_connections: usize,
) -> Result<CliOutcome, CliError> {
    let args: Vec<String> = args.into_iter().collect();
    let mut cmd = command(program, default_max_connections);
    // `--help` anywhere wins over everything else, errors included, as it always did (clap
    // would stop at the first error).
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(CliOutcome::Print(cmd.render_help().to_string()));
    }
    let argv = std::iter::once(program.to_owned()).chain(args);
    let matches = match cmd.try_get_matches_from(argv) {
        Ok(matches) => matches,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok(CliOutcome::Print(e.render().to_string()));
        }
        Err(e) => return Err(describe(&e)),
    };
    let cli = to_cli(&matches).map_err(|e| CliError(explain(&e)))?;
    Ok(CliOutcome::Run(cli))
}

fn to_cli(matches: &ArgMatches) -> Result<Cli, ConfigError> {
    let f = Flags::from_arg_matches(matches).map_err(|e| ConfigError {
        field: "command line",
        reason: e.to_string(),
    })?;
    let mut config = Config {
        max_connections: f.max_connections,
        max_connections_per_ip: f.max_connections_per_ip,
        max_pipeline_bytes: f.max_pipeline_bytes,
        max_unsent_bytes: f.max_unsent_bytes,
        poll_timeout: f.poll_timeout,
        head_timeout: f.head_timeout,
        idle_timeout: f.idle_timeout,
        max_rooms: f.max_rooms,
        room_idle: f.room_idle,
        history_messages: f.history_messages,
        history_bytes: f.history_bytes,
        batch_messages: f.batch_messages,
        max_message_bytes: f.max_message_bytes,
        publish_rate: f.publish_rate,
        publish_burst: f.publish_burst,
        allow_origins: f.allow_origin,
        sse_retry: f.sse_retry,
        sse_heartbeat: f.sse_heartbeat,
        sse_max_age: f.sse_max_age,
        trusted_proxies: f.trusted_proxy,
        allow_hosts: f.allow_host,
        // DNS rebinding: a server on loopback serves only requests addressed to it.
        listen_loopback: f.listen.ip().is_loopback(),
        shared_log: f.redis.is_some(),
        broker_timeout: f.broker_timeout,
        ..Config::default()
    };
    config.limits.max_head = f.max_head_bytes;
    config.limits.max_headers = f.max_headers;
    config.limits.max_uri = f.max_uri_bytes;
    config.limits.max_body = f.max_body_bytes;
    config.validate()?;
    if f.shutdown_grace.is_zero() {
        return Err(ConfigError {
            field: "shutdown_grace",
            reason: "must be longer than 0".into(),
        });
    }
    Ok(Cli {
        listen: f.listen,
        config,
        shutdown_grace: f.shutdown_grace,
        redis: f.redis,
        redis_prefix: f.redis_prefix,
    })
}

/// The flag of each [`Config`] field whose flag is not simply its name with dashes.
const RENAMED: &[(&str, &str)] = &[
    ("limits.max_head", "--max-head-bytes"),
    ("limits.max_headers", "--max-headers"),
    ("limits.max_uri", "--max-uri-bytes"),
    ("limits.max_body", "--max-body-bytes"),
    ("allow_origins", "--allow-origin"),
    ("trusted_proxies", "--trusted-proxy"),
    ("allow_hosts", "--allow-host"),
];

fn flag_of(field: &str) -> String {
    RENAMED.iter().find(|(f, _)| *f == field).map_or_else(
        || format!("--{}", field.replace('_', "-")),
        |(_, flag)| (*flag).to_owned(),
    )
}

/// A validation error in the words of the command line: the flag instead of the field, also
/// where the reason names another field (in backquotes).
fn explain(e: &ConfigError) -> String {
    let mut reason = e.reason.clone();
    while let Some(start) = reason.find('`') {
        let Some(len) = reason[start + 1..].find('`') else {
            break;
        };
        let flag = flag_of(&reason[start + 1..start + 1 + len]);
        reason.replace_range(start..start + len + 2, &flag);
    }
    format!("{}: {reason}", flag_of(e.field))
}

/// A clap error in the binaries' words: `--flag: "value" is not what it takes` for a bad value,
/// clap's own message (which names the argument) otherwise.
fn describe(e: &clap::Error) -> CliError {
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    if e.kind() == ErrorKind::ValueValidation {
        if let (Some(arg), Some(value)) = (
            context(ContextKind::InvalidArg),
            context(ContextKind::InvalidValue),
        ) {
            let flag = arg.split(' ').next().unwrap_or(&arg).to_owned();
            let why = std::error::Error::source(e).map_or_else(String::new, |s| s.to_string());
            return CliError(format!("{flag}: {value:?} {why}"));
        }
    }
    let text = e.render().to_string();
    let text = text
        .trim_end()
        .strip_prefix("error: ")
        .unwrap_or(text.trim_end());
    CliError(text.to_owned())
}

/// A count: plain digits (`FromStr` for integers would accept a leading `+`).
fn count<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("is not {COUNT}"));
    }
    value.parse().map_err(|_| format!("is not {COUNT}"))
}

/// A Redis URL: `redis://` (or `rediss://` for TLS) and something after it; redis-rs reads
/// the rest when the broker starts, and an unusable one stops the server then.
fn redis_url(value: &str) -> Result<String, String> {
    let rest = value
        .strip_prefix("redis://")
        .or_else(|| value.strip_prefix("rediss://"));
    match rest {
        Some(rest) if !rest.is_empty() && value.len() <= 1024 => Ok(value.to_owned()),
        _ => Err("is not a Redis URL (try redis://127.0.0.1:6379)".to_owned()),
    }
}

/// A key prefix: what `redis_log` accepts as one (no braces, printable, at most 64 bytes).
fn redis_prefix(value: &str) -> Result<String, String> {
    if crate::redis_log::valid_prefix(value) {
        Ok(value.to_owned())
    } else {
        Err("is not a key prefix (up to 64 printable characters without braces)".to_owned())
    }
}

fn addr(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| format!("is not {ADDR}"))
}

fn host(value: &str) -> Result<String, String> {
    check_host(value)
        .map(|()| value.to_ascii_lowercase())
        .map_err(str::to_owned)
}

fn origin(value: &str) -> Result<String, String> {
    check_origin(value)
        .map(|()| value.to_owned())
        .map_err(str::to_owned)
}

fn trusted_proxy(value: &str) -> Result<TrustedProxy, String> {
    value.parse().map_err(str::to_owned)
}

/// Parses `250ms`, `25s`, `2m`, or a plain number of seconds.
fn duration(value: &str) -> Result<Duration, String> {
    parse_duration(value).ok_or_else(|| format!("is not {DURATION}"))
}

fn parse_duration(value: &str) -> Option<Duration> {
    let digits_end = value
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(digits_end);
    let n: u64 = count(digits).ok()?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        _ => return None,
    };
    n.checked_mul(ms_per_unit).map(Duration::from_millis)
}

fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The line both binaries print on stdout once they listen: `{program} listening on http://{addr}`.
pub fn startup_line(program: &str, addr: SocketAddr) -> String {
    format!("{program} listening on http://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_follows_the_open_file_limit() {
        assert_eq!(default_max_connections(20_000), 19_936);
        assert_eq!(default_max_connections(10), 1);
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn run(list: &[&str]) -> Result<Cli, CliError> {
        match parse_args("parlor-test", args(list), 4000)? {
            CliOutcome::Run(cli) => Ok(cli),
            CliOutcome::Print(text) => panic!("unexpected help: {text}"),
        }
    }

    fn error(list: &[&str]) -> String {
        run(list).expect_err("should fail").to_string()
    }

    fn print(list: &[&str]) -> String {
        match parse_args("parlor-x", args(list), 77) {
            Ok(CliOutcome::Print(text)) => text,
            other => panic!("expected text to print, got {other:?}"),
        }
    }

    #[test]
    fn no_flags_are_the_defaults() {
        let cli = run(&[]).unwrap();
        assert_eq!(cli, Cli::defaults(4000));
        assert_eq!(cli.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cli.config.max_connections, 4000);
        assert_eq!(cli.shutdown_grace, Duration::from_secs(5));
        assert_eq!(
            Cli::defaults(4000).config,
            Config {
                max_connections: 4000,
                listen_loopback: true,
                ..Config::default()
            }
        );
    }

    #[test]
    fn both_value_forms_and_every_kind() {
        let cli = run(&[
            "--listen",
            "[::1]:0",
            "--poll-timeout=300ms",
            "--idle-timeout",
            "2m",
            "--head-timeout=7",
            "--max-headers",
            "100",
            "--max-body-bytes=1000",
            "--publish-rate",
            "5",
            "--allow-origin",
            "https://a.example",
            "--allow-origin=http://b.example:8080",
            "--shutdown-grace=1s",
            "--max-connections",
            "10",
        ])
        .unwrap();
        assert_eq!(cli.listen, "[::1]:0".parse().unwrap());
        assert_eq!(cli.config.poll_timeout, Duration::from_millis(300));
        assert_eq!(cli.config.idle_timeout, Duration::from_secs(120));
        assert_eq!(cli.config.head_timeout, Duration::from_secs(7));
        assert_eq!(cli.config.limits.max_headers, 100);
        assert_eq!(cli.config.limits.max_body, 1000);
        assert_eq!(cli.config.publish_rate, 5);
        assert_eq!(
            cli.config.allow_origins,
            ["https://a.example", "http://b.example:8080"]
        );
        assert_eq!(cli.shutdown_grace, Duration::from_secs(1));
        assert_eq!(cli.config.max_connections, 10);
    }

    #[test]
    fn every_flag_is_accepted_and_listed_in_help_with_its_default() {
        let text = print(&["--help"]);
        assert_eq!(print(&["-h"]), text);
        assert!(text.contains("parlor-x"));
        assert!(text.contains("--help"));
        assert!(text.contains("--version"));
        assert!(
            text.contains("[default: 77]") && text.contains("open-file limit"),
            "the adapter's connection default is shown and explained: {text}"
        );
        assert!(text.contains("[default: 25s]"));
        assert!(text.contains("[default: 127.0.0.1:8080]"));
        let cmd = command("parlor-x", 77);
        let flags: Vec<&Arg> = cmd
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| l != "help" && l != "version"))
            .collect();
        assert_eq!(flags.len(), 30);
        for arg in flags {
            let long = arg.get_long().unwrap();
            let flag = format!("--{long}");
            let env = format!("PARLOR_{}", long.replace('-', "_").to_uppercase());
            let line = text
                .lines()
                .find(|l| l.contains(&format!("{flag} <")))
                .unwrap_or_else(|| panic!("{flag} not in help"));
            assert!(line.contains(&format!("[env: {env}=]")), "{line}");
            assert!(
                line.contains("[default: ")
                    || ["allow-origin", "trusted-proxy", "allow-host", "redis"].contains(&long),
                "{line}"
            );
            let value = match arg.get_value_names().unwrap()[0].as_str() {
                "ADDR" => "127.0.0.1:1",
                "N" if long == "history-bytes" => "16384",
                "N" if long == "max-unsent-bytes" => "1048576",
                "N" => "8",
                "DUR" => "1s",
                "ORIGIN" => "https://x.example",
                "ADDR_OR_CIDR" => "10.0.0.0/8",
                "HOST" => "x.example",
                "URL" => "redis://127.0.0.1:6379",
                "PREFIX" => "app:",
                other => panic!("{other}"),
            };
            run(&[&flag, value]).unwrap_or_else(|e| panic!("{flag}: {e}"));
        }
    }

    #[test]
    fn trusted_proxies_add_up_and_bad_ones_name_the_flag() {
        let cli = run(&["--trusted-proxy", "127.0.0.1", "--trusted-proxy=fd00::/8"]).unwrap();
        let list: Vec<_> = cli
            .config
            .trusted_proxies
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(list, ["127.0.0.1", "fd00::/8"]);
        for bad in ["localhost", "10.0.0.1/8", "10.0.0.0/40", "127.0.0.1:80"] {
            let e = error(&["--trusted-proxy", bad]);
            assert!(e.starts_with(&format!("--trusted-proxy: {bad:?} ")), "{e}");
        }
        assert!(error(&["--trusted-proxy", "x"]).contains("IP address or CIDR"));
    }

    #[test]
    fn redis_flags_switch_the_log_to_shared() {
        let cli = run(&[]).unwrap();
        assert_eq!((cli.redis, cli.config.shared_log), (None, false));
        assert_eq!(cli.redis_prefix, "parlor:");
        let cli = run(&["--redis", "redis://127.0.0.1:6379/2", "--redis-prefix=app:"]).unwrap();
        assert_eq!(cli.redis.as_deref(), Some("redis://127.0.0.1:6379/2"));
        assert!(cli.config.shared_log);
        assert_eq!(cli.redis_prefix, "app:");
        for bad in [
            ["--redis", "http://x"],
            ["--redis", "redis://"],
            ["--redis-prefix", "a{b}"],
            ["--broker-timeout", "0"],
        ] {
            let e = run(&bad).unwrap_err().to_string();
            assert!(e.starts_with(bad[0]), "{bad:?}: {e}");
        }
    }

    #[test]
    fn help_wins_even_after_errors() {
        let help = print(&["--help"]);
        assert_eq!(print(&["--bogus", "--poll-timeout=x", "-h"]), help);
    }

    #[test]
    fn version_names_the_program_and_the_version() {
        assert_eq!(
            print(&["--version"]),
            format!("parlor-x {}\n", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(print(&["-V"]), print(&["--version"]));
    }

    #[test]
    fn bad_values_name_the_flag_and_why() {
        assert_eq!(
            error(&["--poll-timeout", "abc"]),
            r#"--poll-timeout: "abc" is not a duration (try 25s or 500ms)"#
        );
        assert_eq!(
            error(&["--max-headers=-1"]),
            r#"--max-headers: "-1" is not a whole number (try 100)"#
        );
        assert!(error(&["--listen", "localhost:80"]).starts_with("--listen: \"localhost:80\""));
        assert!(error(&["--allow-origin", "example.com"]).starts_with("--allow-origin:"));
        assert!(error(&["--allow-origin", "https://x/"]).starts_with("--allow-origin:"));
        for bad in ["", "1.5s", "5h", "ms", "+5", "99999999999999999999m", "5 s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert!(count::<usize>("+5").is_err());
        assert!(count::<u32>("99999999999").is_err());
    }

    #[test]
    fn unknown_flags_stray_arguments_and_missing_values() {
        assert!(error(&["--nope"]).contains("'--nope'"));
        assert!(error(&["--nope=3"]).contains("'--nope'"));
        assert!(error(&["8080"]).contains("'8080'"));
        assert!(error(&["--listen"]).contains("--listen"));
        assert!(error(&["--poll-timeout"]).contains("--poll-timeout"));
        // The first problem is the one reported.
        assert!(error(&["--x", "--y"]).contains("'--x'"));
    }

    #[test]
    fn validation_names_the_flag() {
        let zeros = [
            "--max-connections",
            "--max-head-bytes",
            "--max-headers",
            "--max-uri-bytes",
            "--max-body-bytes",
            "--max-pipeline-bytes",
            "--max-unsent-bytes",
            "--max-rooms",
            "--history-messages",
            "--history-bytes",
            "--batch-messages",
            "--max-message-bytes",
            "--poll-timeout",
            "--head-timeout",
            "--idle-timeout",
            "--room-idle",
            "--shutdown-grace",
        ];
        for flag in zeros {
            let e = error(&[flag, "0"]);
            assert!(e.starts_with(&format!("{flag}: ")), "{e}");
        }
        run(&["--max-connections-per-ip", "0", "--publish-rate", "0"]).unwrap();
        assert_eq!(
            error(&["--max-headers", "257"]),
            "--max-headers: 257 is more than the most supported, 256"
        );
        run(&["--max-headers", "256"]).unwrap();
        assert_eq!(
            error(&["--history-bytes", "100", "--max-message-bytes", "101"]),
            "--history-bytes: 100 is less than --max-message-bytes (101): \
             the largest message would not fit"
        );
        run(&["--history-bytes", "101", "--max-message-bytes", "101"]).unwrap();
        assert_eq!(
            error(&["--max-unsent-bytes", "65536"]),
            "--max-unsent-bytes: 65536 is less than one message can take as JSON (99424: \
             --max-message-bytes 16384 × 6 for escaping, plus headers)"
        );
        assert_eq!(
            run(&["--allow-host", "Chat.Example", "--allow-host=b.example:81"])
                .unwrap()
                .config
                .allow_hosts,
            ["chat.example", "b.example:81"]
        );
        assert!(error(&["--allow-host", "a/b"]).starts_with("--allow-host: "));
        assert!(run(&[]).unwrap().config.listen_loopback);
        assert!(
            !run(&["--listen", "0.0.0.0:0"])
                .unwrap()
                .config
                .listen_loopback
        );
        assert_eq!(
            error(&["--publish-rate", "3", "--publish-burst", "0"]),
            "--publish-burst: must be at least 1 when --publish-rate is set"
        );
    }

    #[test]
    fn last_value_wins() {
        let cli = run(&["--poll-timeout", "1s", "--poll-timeout", "2s"]).unwrap();
        assert_eq!(cli.config.poll_timeout, Duration::from_secs(2));
    }

    #[test]
    fn startup_line_names_the_real_address() {
        assert_eq!(
            startup_line("parlor-mio", "127.0.0.1:8080".parse().unwrap()),
            "parlor-mio listening on http://127.0.0.1:8080"
        );
        assert_eq!(
            startup_line("parlor-smol", "[::1]:9".parse().unwrap()),
            "parlor-smol listening on http://[::1]:9"
        );
    }
}
