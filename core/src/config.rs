//! Configuration: every limit and timeout, with defaults and validation, and the command line
//! shared by both server binaries.
//!
//! [`Config`] is what the `Server` needs. [`parse_args`] turns the command line of
//! `parlor-mio` and `parlor-smol` into a [`Cli`] (the config plus what only an adapter uses: the
//! listen address and the shutdown grace period), so the two binaries accept exactly the same
//! flags with exactly the same errors. Nothing here reads the environment: the adapter passes the
//! arguments in, and the one default that depends on the process (the connection cap, from the
//! open-file limit) is an argument too.
//!
//! Every flag takes `--flag value` or `--flag=value`. The flags live in one table, which both the
//! parser and the `--help` text are built from, so the help cannot forget a flag.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;

use crate::http::{Limits, MAX_HEADERS_CAP};

/// The connection cap of [`Config::default`]. The binaries replace it with the process's
/// open-file limit minus a small reserve.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// File descriptors kept in reserve below the open-file limit when the binaries derive their
/// connection cap from it: the listener, the poll, the signal pipe, stdio, and some slack.
pub const FD_RESERVE: u64 = 64;

/// The default connection cap for a process whose open-file limit is `nofile`: the limit
/// minus [`FD_RESERVE`] (each connection is one descriptor), at least 1.
pub fn default_max_connections(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(FD_RESERVE).max(1)).unwrap_or(usize::MAX)
}

/// The default listen address of both binaries, `127.0.0.1:8080`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The default time a graceful shutdown waits for connections to close.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// All limits and timeouts of a server. Build one with [`Config::default`] and change fields,
/// then check it with [`Config::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most connections open at once (`--max-connections`); past it a new connection gets `503`.
    pub max_connections: usize,
    /// Most connections from one client address (`--max-connections-per-ip`); `0` is no cap.
    pub max_connections_per_ip: usize,
    /// The limits of one request: `--max-head-bytes` (431), `--max-headers` (431),
    /// `--max-uri-bytes` (414), `--max-body-bytes` (413).
    pub limits: Limits,
    /// Bytes buffered behind a held poll before reading from that connection pauses
    /// (`--max-pipeline-bytes`).
    pub max_pipeline_bytes: usize,
    /// A client whose unsent response bytes pass this is cut off (`--max-unsent-bytes`).
    pub max_unsent_bytes: usize,
    /// How long a poll is held before it is answered `204` (`--poll-timeout`).
    pub poll_timeout: Duration,
    /// How long a request head (and its body) may take to arrive before `408` and close
    /// (`--head-timeout`).
    pub head_timeout: Duration,
    /// How long an idle keep-alive connection stays open (`--idle-timeout`).
    pub idle_timeout: Duration,
    /// Most rooms (`--max-rooms`); a request that would create one more gets `503`.
    pub max_rooms: usize,
    /// Messages kept per room (`--history-messages`).
    pub history_messages: usize,
    /// Bytes of message text kept per room (`--history-bytes`).
    pub history_bytes: usize,
    /// Most messages in one JSON batch (`--batch-messages`).
    pub batch_messages: usize,
    /// Longest message text after decoding the body, in bytes: `413` past it
    /// (`--max-message-bytes`).
    pub max_message_bytes: usize,
    /// Messages per second one client address may publish (`--publish-rate`); `0` is no limit.
    pub publish_rate: u32,
    /// Messages a client may publish at once before the rate applies (`--publish-burst`).
    pub publish_burst: u32,
    /// Cross-origin `Origin`s allowed to publish (`--allow-origin`, repeatable), e.g.
    /// `https://chat.example.com`. Same-origin requests and requests without `Origin` are always
    /// allowed.
    pub allow_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: 0,
            limits: Limits::default(),
            max_pipeline_bytes: 64 * 1024,
            max_unsent_bytes: 1024 * 1024,
            poll_timeout: Duration::from_secs(25),
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_rooms: 1024,
            history_messages: 256,
            history_bytes: 256 * 1024,
            batch_messages: 100,
            max_message_bytes: 16 * 1024,
            publish_rate: 0,
            publish_burst: 20,
            allow_origins: Vec::new(),
        }
    }
}

impl Config {
    /// Checks that the values make sense together. The error names the flag at fault.
    ///
    /// Zero is an error for every cap and timeout, except the two that document `0` as "off"
    /// (`max_connections_per_ip`, `publish_rate`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("--max-connections", self.max_connections),
            ("--max-head-bytes", self.limits.max_head),
            ("--max-headers", self.limits.max_headers),
            ("--max-uri-bytes", self.limits.max_uri),
            ("--max-body-bytes", self.limits.max_body),
            ("--max-pipeline-bytes", self.max_pipeline_bytes),
            ("--max-unsent-bytes", self.max_unsent_bytes),
            ("--max-rooms", self.max_rooms),
            ("--history-messages", self.history_messages),
            ("--history-bytes", self.history_bytes),
            ("--batch-messages", self.batch_messages),
            ("--max-message-bytes", self.max_message_bytes),
        ];
        for (flag, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(flag, "must be at least 1"));
            }
        }
        if self.limits.max_headers > MAX_HEADERS_CAP {
            return Err(ConfigError::invalid(
                "--max-headers",
                format!(
                    "{} is more than the most supported, {MAX_HEADERS_CAP}",
                    self.limits.max_headers
                ),
            ));
        }
        let timeouts = [
            ("--poll-timeout", self.poll_timeout),
            ("--head-timeout", self.head_timeout),
            ("--idle-timeout", self.idle_timeout),
        ];
        for (flag, value) in timeouts {
            if value.is_zero() {
                return Err(ConfigError::invalid(flag, "must be longer than 0"));
            }
        }
        if self.history_bytes < self.max_message_bytes {
            return Err(ConfigError::invalid(
                "--history-bytes",
                format!(
                    "{} is less than --max-message-bytes ({}): the largest message would not fit",
                    self.history_bytes, self.max_message_bytes
                ),
            ));
        }
        if self.publish_rate > 0 && self.publish_burst == 0 {
            return Err(ConfigError::invalid(
                "--publish-burst",
                "must be at least 1 when --publish-rate is set",
            ));
        }
        for origin in &self.allow_origins {
            check_origin(origin).map_err(|why| {
                ConfigError::invalid("--allow-origin", format!("{origin:?} {why}"))
            })?;
        }
        Ok(())
    }
}

/// A value on the command line (or in a [`Config`]) that cannot be used. Its `Display` names the
/// flag and says why, in one line for stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A flag that does not exist (or a stray argument that is not a flag).
    UnknownFlag(String),
    /// A flag that needs a value was last on the command line.
    MissingValue {
        /// The flag, e.g. `--listen`.
        flag: &'static str,
    },
    /// A value that does not parse as what the flag takes.
    BadValue {
        /// The flag, e.g. `--poll-timeout`.
        flag: &'static str,
        /// The value as given.
        value: String,
        /// What was expected, e.g. `a duration (try 25s or 500ms)`.
        expected: &'static str,
    },
    /// A value that parses but is not allowed (from [`Config::validate`]).
    Invalid {
        /// The flag, e.g. `--max-headers`.
        flag: &'static str,
        /// Why, e.g. `must be at least 1`.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(flag: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            flag,
            reason: reason.into(),
        }
    }

    /// The flag at fault, when there is one known flag.
    pub fn flag(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownFlag(_) => None,
            ConfigError::MissingValue { flag }
            | ConfigError::BadValue { flag, .. }
            | ConfigError::Invalid { flag, .. } => Some(flag),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownFlag(arg) if arg.starts_with('-') => {
                write!(f, "unknown flag {arg:?} (see --help)")
            }
            ConfigError::UnknownFlag(arg) => {
                write!(
                    f,
                    "unexpected argument {arg:?}: every value follows its flag (see --help)"
                )
            }
            ConfigError::MissingValue { flag } => write!(f, "{flag}: missing value"),
            ConfigError::BadValue {
                flag,
                value,
                expected,
            } => write!(f, "{flag}: {value:?} is not {expected}"),
            ConfigError::Invalid { flag, reason } => write!(f, "{flag}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The parsed command line of a server binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cli {
    /// The address to listen on (`--listen`).
    pub listen: SocketAddr,
    /// The server's configuration, already validated.
    pub config: Config,
    /// How long a graceful shutdown waits for connections to close (`--shutdown-grace`).
    pub shutdown_grace: Duration,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // made once at start-up; boxing would only cost callers
pub enum CliOutcome {
    /// Run the server.
    Run(Cli),
    /// Print this text on stdout and exit successfully (`--help`).
    Help(String),
}

/// What a flag's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Addr,
    Count,
    Duration,
    Origin,
}

impl Kind {
    fn metavar(self) -> &'static str {
        match self {
            Kind::Addr => "ADDR",
            Kind::Count => "N",
            Kind::Duration => "DUR",
            Kind::Origin => "ORIGIN",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Addr => "an address (try 127.0.0.1:8080 or [::1]:8080)",
            Kind::Count => "a whole number (try 100)",
            Kind::Duration => "a duration (try 25s or 500ms)",
            Kind::Origin => "an origin (try https://chat.example.com)",
        }
    }
}

/// One command-line flag: its name, what it takes, how to set it and how to show its value.
struct Flag {
    name: &'static str,
    kind: Kind,
    meaning: &'static str,
    /// Stores the value; `Err` carries nothing, the caller builds the [`ConfigError`].
    set: fn(&mut Cli, &str) -> Result<(), ()>,
    /// The current value, for the help text (the defaults).
    show: fn(&Cli) -> String,
}

/// Every flag but `--help`, in the order `--help` lists them.
static FLAGS: &[Flag] = &[
    Flag {
        name: "--listen",
        kind: Kind::Addr,
        meaning: "address and port to listen on",
        set: |c, v| v.parse().map(|a| c.listen = a).map_err(drop),
        show: |c| c.listen.to_string(),
    },
    Flag {
        name: "--max-connections",
        kind: Kind::Count,
        meaning: "most connections open at once (503 past it)",
        set: |c, v| count(v).map(|n| c.config.max_connections = n),
        show: |c| c.config.max_connections.to_string(),
    },
    Flag {
        name: "--max-connections-per-ip",
        kind: Kind::Count,
        meaning: "most connections from one client address, 0 = no cap (503 past it)",
        set: |c, v| count(v).map(|n| c.config.max_connections_per_ip = n),
        show: |c| c.config.max_connections_per_ip.to_string(),
    },
    Flag {
        name: "--max-head-bytes",
        kind: Kind::Count,
        meaning: "longest request head, in bytes (431 past it)",
        set: |c, v| count(v).map(|n| c.config.limits.max_head = n),
        show: |c| c.config.limits.max_head.to_string(),
    },
    Flag {
        name: "--max-headers",
        kind: Kind::Count,
        meaning: "most header fields in one request (431 past it)",
        set: |c, v| count(v).map(|n| c.config.limits.max_headers = n),
        show: |c| c.config.limits.max_headers.to_string(),
    },
    Flag {
        name: "--max-uri-bytes",
        kind: Kind::Count,
        meaning: "longest request target, in bytes (414 past it)",
        set: |c, v| count(v).map(|n| c.config.limits.max_uri = n),
        show: |c| c.config.limits.max_uri.to_string(),
    },
    Flag {
        name: "--max-body-bytes",
        kind: Kind::Count,
        meaning: "largest request body, in bytes (413 past it)",
        set: |c, v| count(v).map(|n| c.config.limits.max_body = n),
        show: |c| c.config.limits.max_body.to_string(),
    },
    Flag {
        name: "--max-pipeline-bytes",
        kind: Kind::Count,
        meaning: "bytes buffered behind a held poll before reading pauses",
        set: |c, v| count(v).map(|n| c.config.max_pipeline_bytes = n),
        show: |c| c.config.max_pipeline_bytes.to_string(),
    },
    Flag {
        name: "--max-unsent-bytes",
        kind: Kind::Count,
        meaning: "a client whose unsent bytes pass this is cut off",
        set: |c, v| count(v).map(|n| c.config.max_unsent_bytes = n),
        show: |c| c.config.max_unsent_bytes.to_string(),
    },
    Flag {
        name: "--poll-timeout",
        kind: Kind::Duration,
        meaning: "how long a poll is held before 204",
        set: |c, v| parse_duration(v).map(|d| c.config.poll_timeout = d),
        show: |c| show_duration(c.config.poll_timeout),
    },
    Flag {
        name: "--head-timeout",
        kind: Kind::Duration,
        meaning: "time for a request head and body to arrive (408 and close past it)",
        set: |c, v| parse_duration(v).map(|d| c.config.head_timeout = d),
        show: |c| show_duration(c.config.head_timeout),
    },
    Flag {
        name: "--idle-timeout",
        kind: Kind::Duration,
        meaning: "how long an idle keep-alive connection stays open",
        set: |c, v| parse_duration(v).map(|d| c.config.idle_timeout = d),
        show: |c| show_duration(c.config.idle_timeout),
    },
    Flag {
        name: "--max-rooms",
        kind: Kind::Count,
        meaning: "most rooms (503 past it)",
        set: |c, v| count(v).map(|n| c.config.max_rooms = n),
        show: |c| c.config.max_rooms.to_string(),
    },
    Flag {
        name: "--history-messages",
        kind: Kind::Count,
        meaning: "messages kept per room",
        set: |c, v| count(v).map(|n| c.config.history_messages = n),
        show: |c| c.config.history_messages.to_string(),
    },
    Flag {
        name: "--history-bytes",
        kind: Kind::Count,
        meaning: "bytes of message text kept per room",
        set: |c, v| count(v).map(|n| c.config.history_bytes = n),
        show: |c| c.config.history_bytes.to_string(),
    },
    Flag {
        name: "--batch-messages",
        kind: Kind::Count,
        meaning: "most messages in one JSON batch",
        set: |c, v| count(v).map(|n| c.config.batch_messages = n),
        show: |c| c.config.batch_messages.to_string(),
    },
    Flag {
        name: "--max-message-bytes",
        kind: Kind::Count,
        meaning: "longest message after decoding, in bytes (413 past it)",
        set: |c, v| count(v).map(|n| c.config.max_message_bytes = n),
        show: |c| c.config.max_message_bytes.to_string(),
    },
    Flag {
        name: "--publish-rate",
        kind: Kind::Count,
        meaning: "messages per second per client address, 0 = no limit (429 past it)",
        set: |c, v| count(v).map(|n| c.config.publish_rate = n),
        show: |c| c.config.publish_rate.to_string(),
    },
    Flag {
        name: "--publish-burst",
        kind: Kind::Count,
        meaning: "messages a client may publish at once before the rate applies",
        set: |c, v| count(v).map(|n| c.config.publish_burst = n),
        show: |c| c.config.publish_burst.to_string(),
    },
    Flag {
        name: "--allow-origin",
        kind: Kind::Origin,
        meaning: "a cross-origin Origin allowed to publish (repeatable)",
        set: |c, v| {
            check_origin(v).map_err(drop)?;
            c.config.allow_origins.push(v.to_owned());
            Ok(())
        },
        show: |c| {
            if c.config.allow_origins.is_empty() {
                "none".to_owned()
            } else {
                c.config.allow_origins.join(" ")
            }
        },
    },
    Flag {
        name: "--shutdown-grace",
        kind: Kind::Duration,
        meaning: "how long a graceful shutdown waits for connections to close",
        set: |c, v| parse_duration(v).map(|d| c.shutdown_grace = d),
        show: |c| show_duration(c.shutdown_grace),
    },
];

/// The flag that validation blames for a zero grace period.
const SHUTDOWN_GRACE: &str = "--shutdown-grace";

/// Parses the command line of a server binary (without the program name: pass
/// `std::env::args().skip(1)`).
///
/// `program` names the binary in the help text; `default_max_connections` is the connection cap
/// when `--max-connections` is not given (the adapter derives it from the open-file limit).
/// Flags take `--flag value` or `--flag=value`; a repeated flag overrides the earlier one, except
/// `--allow-origin`, which adds to the list. `--help` (or `-h`) anywhere wins over everything
/// else. The resulting [`Config`] is validated.
pub fn parse_args(
    program: &str,
    args: impl IntoIterator<Item = String>,
    default_max_connections: usize,
) -> Result<CliOutcome, ConfigError> {
    let mut cli = default_cli(default_max_connections);
    let mut args = args.into_iter();
    let mut first_error = None;
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(CliOutcome::Help(help(program, default_max_connections)));
        }
        if first_error.is_some() {
            continue; // keep looking for --help only
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if arg.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let Some(flag) = FLAGS.iter().find(|f| f.name == name) else {
            first_error = Some(ConfigError::UnknownFlag(arg.clone()));
            continue;
        };
        let Some(value) = inline.or_else(|| args.next()) else {
            first_error = Some(ConfigError::MissingValue { flag: flag.name });
            continue;
        };
        if (flag.set)(&mut cli, &value).is_err() {
            first_error = Some(ConfigError::BadValue {
                flag: flag.name,
                value,
                expected: flag.kind.expected(),
            });
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    cli.config.validate()?;
    if cli.shutdown_grace.is_zero() {
        return Err(ConfigError::invalid(
            SHUTDOWN_GRACE,
            "must be longer than 0",
        ));
    }
    Ok(CliOutcome::Run(cli))
}

/// The line both binaries print on stdout once they listen: `{program} listening on http://{addr}`.
pub fn startup_line(program: &str, addr: SocketAddr) -> String {
    format!("{program} listening on http://{addr}")
}

fn default_cli(default_max_connections: usize) -> Cli {
    Cli {
        listen: DEFAULT_LISTEN,
        config: Config {
            max_connections: default_max_connections,
            ..Config::default()
        },
        shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
    }
}

fn help(program: &str, default_max_connections: usize) -> String {
    let defaults = default_cli(default_max_connections);
    let mut out = format!(
        "{program}: a long-polling chat server (Parlor)\n\n\
         Usage: {program} [--flag VALUE | --flag=VALUE]...\n\n\
         Flags (default in brackets):\n"
    );
    let width = FLAGS
        .iter()
        .map(|f| f.name.len() + 1 + f.kind.metavar().len())
        .max()
        .unwrap_or(0);
    for flag in FLAGS {
        let left = format!("{} {}", flag.name, flag.kind.metavar());
        out.push_str(&format!(
            "  {left:<width$}  {} [{}]\n",
            flag.meaning,
            (flag.show)(&defaults)
        ));
    }
    out.push_str(&format!("  {:<width$}  print this help\n", "--help"));
    out.push_str(
        "\nDUR is 250ms, 25s, 2m, or a plain number of seconds. \
         N is a whole number.\n",
    );
    out
}

fn count<T: core::str::FromStr>(value: &str) -> Result<T, ()> {
    // `FromStr` for integers accepts a leading `+`; a count is plain digits.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    value.parse().map_err(drop)
}

/// Parses `250ms`, `25s`, `2m`, or a plain number of seconds.
fn parse_duration(value: &str) -> Result<Duration, ()> {
    let digits_end = value
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(digits_end);
    let n: u64 = count(digits)?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        _ => return Err(()),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or(())
}

fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, no path, no trailing slash.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    let Some((scheme, host)) = origin.split_once("://") else {
        return Err("has no scheme (try https://chat.example.com)");
    };
    if scheme != "http" && scheme != "https" {
        return Err("must start with http:// or https://");
    }
    if host.is_empty() || host.contains(['/', '?', '#', ' ', '\t']) {
        return Err("must be scheme://host[:port] with nothing after it");
    }
    Ok(())
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

    fn run(list: &[&str]) -> Result<Cli, ConfigError> {
        match parse_args("parlor-test", args(list), 4000)? {
            CliOutcome::Run(cli) => Ok(cli),
            CliOutcome::Help(_) => panic!("unexpected help"),
        }
    }

    fn error(list: &[&str]) -> String {
        run(list).expect_err("should fail").to_string()
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.poll_timeout, Duration::from_secs(25));
        assert_eq!(c.max_unsent_bytes, 1 << 20);
        assert_eq!(c.history_bytes, 262_144);
        let cli = run(&[]).unwrap();
        assert_eq!(cli.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cli.config.max_connections, 4000);
        assert_eq!(cli.shutdown_grace, Duration::from_secs(5));
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
    fn every_flag_is_accepted_and_listed_in_help() {
        let CliOutcome::Help(text) = parse_args("parlor-x", args(&["--help"]), 77).unwrap() else {
            panic!("no help");
        };
        assert!(text.contains("parlor-x"));
        assert!(text.contains("--help"));
        assert!(
            text.contains("[77]"),
            "the adapter's connection default is shown"
        );
        assert!(text.contains("[25s]"));
        assert!(text.contains("[127.0.0.1:8080]"));
        for flag in FLAGS {
            assert!(text.contains(flag.name), "{} not in help", flag.name);
            let value = match flag.kind {
                Kind::Addr => "127.0.0.1:1",
                Kind::Count if flag.name == "--history-bytes" => "16384",
                Kind::Count => "8",
                Kind::Duration => "1s",
                Kind::Origin => "https://x.example",
            };
            run(&[flag.name, value]).unwrap_or_else(|e| panic!("{}: {e}", flag.name));
        }
        // Each flag is on its own line with its default.
        assert_eq!(
            text.lines().filter(|l| l.ends_with(']')).count(),
            FLAGS.len()
        );
    }

    #[test]
    fn help_wins_even_after_errors() {
        let outcome = parse_args("p", args(&["--bogus", "--poll-timeout=x", "-h"]), 1).unwrap();
        assert!(matches!(outcome, CliOutcome::Help(_)));
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
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(count::<usize>("+5").is_err());
        assert!(count::<u32>("99999999999").is_err());
    }

    #[test]
    fn unknown_flags_stray_arguments_and_missing_values() {
        assert_eq!(error(&["--nope"]), r#"unknown flag "--nope" (see --help)"#);
        assert_eq!(
            error(&["--nope=3"]),
            r#"unknown flag "--nope=3" (see --help)"#
        );
        assert!(error(&["8080"]).starts_with("unexpected argument \"8080\""));
        assert_eq!(error(&["--listen"]), "--listen: missing value");
        assert_eq!(
            run(&["--poll-timeout"]).unwrap_err(),
            ConfigError::MissingValue {
                flag: "--poll-timeout"
            }
        );
        // The first problem is the one reported.
        assert_eq!(error(&["--x", "--y"]), r#"unknown flag "--x" (see --help)"#);
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
            "--shutdown-grace",
        ];
        for flag in zeros {
            let e = run(&[flag, "0"]).unwrap_err();
            assert_eq!(e.flag(), Some(flag), "{e}");
        }
        run(&["--max-connections-per-ip", "0", "--publish-rate", "0"]).unwrap();
        assert_eq!(
            error(&["--max-headers", "257"]),
            "--max-headers: 257 is more than the most supported, 256"
        );
        run(&["--max-headers", "256"]).unwrap();
        let e = run(&["--history-bytes", "100", "--max-message-bytes", "101"]).unwrap_err();
        assert_eq!(e.flag(), Some("--history-bytes"));
        run(&["--history-bytes", "101", "--max-message-bytes", "101"]).unwrap();
        let e = run(&["--publish-rate", "3", "--publish-burst", "0"]).unwrap_err();
        assert_eq!(e.flag(), Some("--publish-burst"));
        let bad = Config {
            allow_origins: vec!["ftp://x".into()],
            ..Config::default()
        };
        assert_eq!(bad.validate().unwrap_err().flag(), Some("--allow-origin"));
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
