//! Configuration: every limit and timeout of a [`Server`](crate::Server), its defaults and
//! [`Config::validate`].
//!
//! Nothing here reads argv or the environment: the binaries' command line (flags, `PARLOR_*`
//! variables, `--help`) is in the `parlor-os` crate, which fills a [`Config`] and calls
//! [`Config::validate`]. Errors name the [`Config`] field at fault, so a front end can show the
//! name its user typed.

use core::fmt;
use core::time::Duration;

use crate::forwarded::TrustedProxy;
use crate::http::{Limits, MAX_HEADERS_CAP};

/// The connection cap of [`Config::default`]. The binaries replace it with the process's
/// open-file limit minus a small reserve (see `parlor-os`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

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
    /// Most rooms (`--max-rooms`). A new room takes the place of the room idle (no waiters)
    /// the longest; a request that needs a new room when every room has waiters gets `503`.
    pub max_rooms: usize,
    /// A room with no waiters and no message for this long is freed, its history with it
    /// (`--room-idle`). A room with neither history nor waiters is freed at once.
    pub room_idle: Duration,
    /// Messages kept per room (`--history-messages`).
    pub history_messages: usize,
    /// Bytes kept per room (`--history-bytes`): each message costs its text, its id twice and a
    /// fixed overhead (see docs/HTTP.md), so the cap bounds memory, not only text.
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
    /// The reconnection delay a Server-Sent Events stream asks its client for, in its first
    /// bytes (`retry:`; `--sse-retry`).
    pub sse_retry: Duration,
    /// A stream silent this long gets a `: keepalive` comment (`--sse-heartbeat`).
    pub sse_heartbeat: Duration,
    /// A stream open this long is ended cleanly, so its client reconnects with `Last-Event-ID`
    /// (`--sse-max-age`); `0` is no limit.
    pub sse_max_age: Duration,
    /// Peers whose `Forwarded` / `X-Forwarded-*` headers are believed (`--trusted-proxy`,
    /// repeatable): the client address and public origin they state replace the peer's for the
    /// rate limit, the per-address connection cap and the same-origin rule. None by default.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Host names (or `host:port`) accepted in `Host` besides the loopback ones when
    /// [`listen_loopback`](Self::listen_loopback) is set (`--allow-host`, repeatable).
    pub allow_hosts: Vec<String>,
    /// The server listens on a loopback address: a request whose `Host` is not a loopback name
    /// or address (nor in `allow_hosts`) is refused `421`, which defeats DNS rebinding. Set by
    /// the command line from `--listen`.
    pub listen_loopback: bool,
    /// Rooms live in a shared message log outside the core (`--redis`), reached through
    /// [`BrokerRequest`](crate::broker::BrokerRequest)s and
    /// [`BrokerEvent`](crate::broker::BrokerEvent)s, so many nodes share them (see
    /// [`broker`](crate::broker)). `false` (the default): rooms live in this process's memory.
    pub shared_log: bool,
    /// With a shared log: how long a request may wait for the log (a publish to be stored, a
    /// room to be loaded) before it is answered `503` with `Retry-After`.
    pub broker_timeout: Duration,
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
            room_idle: Duration::from_secs(3600),
            history_messages: 256,
            history_bytes: 256 * 1024,
            batch_messages: 100,
            max_message_bytes: 16 * 1024,
            publish_rate: 0,
            publish_burst: 20,
            allow_origins: Vec::new(),
            sse_retry: Duration::from_secs(3),
            sse_heartbeat: Duration::from_secs(15),
            sse_max_age: Duration::ZERO,
            trusted_proxies: Vec::new(),
            allow_hosts: Vec::new(),
            listen_loopback: false,
            shared_log: false,
            broker_timeout: Duration::from_secs(5),
        }
    }
}

/// Bytes of a poll's answer besides its messages' text: status line, headers (cursor, gap,
/// CORS), the JSON envelope and the room name. A bound, not an exact count.
pub const ANSWER_OVERHEAD: usize = 1024;

/// Bytes of one message in a JSON batch besides its escaped text: the cursor, the time, the
/// field names.
pub const JSON_MESSAGE_OVERHEAD: usize = 96;

/// The most a byte of message text grows when escaped into JSON (`<` becomes `\u003c`).
pub const JSON_ESCAPE_WORST: usize = 6;

impl Config {
    /// Most bytes of a JSON batch's body: half the unsent cap, so a full batch never cuts its
    /// reader off even with another answer queued before it. A batch always carries at least
    /// one message ([`validate`](Self::validate) makes sure one always fits the unsent cap).
    pub fn batch_budget(&self) -> usize {
        self.max_unsent_bytes / 2
    }

    /// Checks that the values make sense together. The error names the field at fault.
    ///
    /// Zero is an error for every cap and timeout, except those that document `0` as "off"
    /// (`max_connections_per_ip`, `publish_rate`, `sse_max_age`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_connections", self.max_connections),
            ("limits.max_head", self.limits.max_head),
            ("limits.max_headers", self.limits.max_headers),
            ("limits.max_uri", self.limits.max_uri),
            ("limits.max_body", self.limits.max_body),
            ("max_pipeline_bytes", self.max_pipeline_bytes),
            ("max_unsent_bytes", self.max_unsent_bytes),
            ("max_rooms", self.max_rooms),
            ("history_messages", self.history_messages),
            ("history_bytes", self.history_bytes),
            ("batch_messages", self.batch_messages),
            ("max_message_bytes", self.max_message_bytes),
        ];
        for (flag, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(flag, "must be at least 1"));
            }
        }
        // A connection slot keeps room indexes and waiter slots as `u32` (conn/held.rs).
        for (flag, value) in [
            ("max_connections", self.max_connections),
            ("max_rooms", self.max_rooms),
        ] {
            if u32::try_from(value).is_err() {
                return Err(ConfigError::invalid(
                    flag,
                    format!("{value} is more than the most supported, {}", u32::MAX),
                ));
            }
        }
        if self.limits.max_headers > MAX_HEADERS_CAP {
            return Err(ConfigError::invalid(
                "limits.max_headers",
                format!(
                    "{} is more than the most supported, {MAX_HEADERS_CAP}",
                    self.limits.max_headers
                ),
            ));
        }
        let timeouts = [
            ("poll_timeout", self.poll_timeout),
            ("head_timeout", self.head_timeout),
            ("idle_timeout", self.idle_timeout),
            ("sse_retry", self.sse_retry),
            ("sse_heartbeat", self.sse_heartbeat),
            ("broker_timeout", self.broker_timeout),
        ];
        for (flag, value) in timeouts {
            if value.is_zero() {
                return Err(ConfigError::invalid(flag, "must be longer than 0"));
            }
        }
        if self.history_bytes < self.max_message_bytes {
            return Err(ConfigError::invalid(
                "history_bytes",
                format!(
                    "{} is less than `max_message_bytes` ({}): the largest message would not fit",
                    self.history_bytes, self.max_message_bytes
                ),
            ));
        }
        let one_message = self
            .max_message_bytes
            .saturating_mul(JSON_ESCAPE_WORST)
            .saturating_add(JSON_MESSAGE_OVERHEAD + ANSWER_OVERHEAD);
        if one_message > self.max_unsent_bytes {
            return Err(ConfigError::invalid(
                "max_unsent_bytes",
                format!(
                    "{} is less than one message can take as JSON ({one_message}: \
                     `max_message_bytes` {} × {JSON_ESCAPE_WORST} for escaping, plus headers)",
                    self.max_unsent_bytes, self.max_message_bytes
                ),
            ));
        }
        if self.room_idle.is_zero() {
            return Err(ConfigError::invalid("room_idle", "must be longer than 0"));
        }
        if self.publish_rate > 0 && self.publish_burst == 0 {
            return Err(ConfigError::invalid(
                "publish_burst",
                "must be at least 1 when `publish_rate` is set",
            ));
        }
        for origin in &self.allow_origins {
            check_origin(origin).map_err(|why| {
                ConfigError::invalid("allow_origins", format!("{origin:?} {why}"))
            })?;
        }
        for host in &self.allow_hosts {
            check_host(host)
                .map_err(|why| ConfigError::invalid("allow_hosts", format!("{host:?} {why}")))?;
        }
        Ok(())
    }
}

/// A [`Config`] value that cannot be used: which field, and why. Its `Display` is one line,
/// `field: reason`; a reason that involves another field names it in backquotes
/// (`` `max_message_bytes` ``), so a front end can replace both with its own names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field at fault, as written in Rust: `poll_timeout`, `limits.max_headers`.
    pub field: &'static str,
    /// Why, e.g. `must be at least 1`.
    pub reason: String,
}

impl ConfigError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Whether `host` is one as a `Host` field carries it: a name or address, optionally `:port`.
/// `Err` says what is wrong, for an error message.
pub fn check_host(host: &str) -> Result<(), &'static str> {
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if valid {
        Ok(())
    } else {
        Err("must be a host name or address, with an optional :port")
    }
}

/// Whether `origin` is one as browsers send it: `scheme://host[:port]`, no path, no trailing
/// slash. `Err` says what is wrong, for an error message.
pub fn check_origin(origin: &str) -> Result<(), &'static str> {
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
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.poll_timeout, Duration::from_secs(25));
        assert_eq!(c.max_unsent_bytes, 1 << 20);
        assert_eq!(c.history_bytes, 262_144);
    }

    fn field_at_fault(change: impl FnOnce(&mut Config)) -> &'static str {
        let mut c = Config::default();
        change(&mut c);
        c.validate().expect_err("should be invalid").field
    }

    #[test]
    fn validation_names_the_field_and_why() {
        type Zero = fn(&mut Config);
        let zeros: [(&str, Zero); 16] = [
            ("max_connections", |c| c.max_connections = 0),
            ("limits.max_head", |c| c.limits.max_head = 0),
            ("limits.max_headers", |c| c.limits.max_headers = 0),
            ("limits.max_uri", |c| c.limits.max_uri = 0),
            ("limits.max_body", |c| c.limits.max_body = 0),
            ("max_pipeline_bytes", |c| c.max_pipeline_bytes = 0),
            ("max_unsent_bytes", |c| c.max_unsent_bytes = 0),
            ("max_rooms", |c| c.max_rooms = 0),
            ("history_messages", |c| c.history_messages = 0),
            ("history_bytes", |c| c.history_bytes = 0),
            ("batch_messages", |c| c.batch_messages = 0),
            ("max_message_bytes", |c| c.max_message_bytes = 0),
            ("poll_timeout", |c| c.poll_timeout = Duration::ZERO),
            ("head_timeout", |c| c.head_timeout = Duration::ZERO),
            ("idle_timeout", |c| c.idle_timeout = Duration::ZERO),
            ("room_idle", |c| c.room_idle = Duration::ZERO),
        ];
        for (field, zero) in zeros {
            assert_eq!(field_at_fault(zero), field);
        }
        Config {
            max_connections_per_ip: 0,
            publish_rate: 0,
            ..Config::default()
        }
        .validate()
        .unwrap();
        let mut c = Config::default();
        c.limits.max_headers = MAX_HEADERS_CAP + 1;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "limits.max_headers: 257 is more than the most supported, 256"
        );
        c.limits.max_headers = MAX_HEADERS_CAP;
        c.validate().unwrap();
        // Rooms and connections are numbered in 32 bits in a connection's slot.
        for (field, set) in [
            (
                "max_connections",
                (|c, n| c.max_connections = n) as fn(&mut Config, usize),
            ),
            ("max_rooms", |c, n| c.max_rooms = n),
        ] {
            let mut c = Config::default();
            set(&mut c, u32::MAX as usize);
            c.validate().unwrap();
            set(&mut c, u32::MAX as usize + 1);
            assert_eq!(
                c.validate().unwrap_err().to_string(),
                format!("{field}: 4294967296 is more than the most supported, 4294967295")
            );
        }
        let e = Config {
            history_bytes: 100,
            max_message_bytes: 101,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "history_bytes");
        assert!(e.reason.contains("`max_message_bytes`"), "{e}");
        Config {
            history_bytes: 101,
            max_message_bytes: 101,
            ..Config::default()
        }
        .validate()
        .unwrap();
        assert_eq!(
            field_at_fault(|c| {
                c.publish_rate = 3;
                c.publish_burst = 0;
            }),
            "publish_burst"
        );
        for bad in ["ftp://x", "example.com", "https://x/", "https://"] {
            let c = Config {
                allow_origins: vec![bad.into()],
                ..Config::default()
            };
            assert_eq!(c.validate().unwrap_err().field, "allow_origins", "{bad}");
        }
        for bad in ["", "a b", "x/y", "h@x"] {
            let c = Config {
                allow_hosts: vec![bad.into()],
                ..Config::default()
            };
            assert_eq!(c.validate().unwrap_err().field, "allow_hosts", "{bad:?}");
        }
        let e = Config {
            max_unsent_bytes: 64 * 1024,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "max_unsent_bytes");
        assert!(e.reason.contains("`max_message_bytes`"), "{e}");
    }

    #[test]
    fn each_rule_holds_exactly_at_its_boundary() {
        // The unsent cap must hold one message escaped into JSON, headers included: exactly that
        // is valid, one byte less is not.
        let one_message = Config::default().max_message_bytes * JSON_ESCAPE_WORST
            + JSON_MESSAGE_OVERHEAD
            + ANSWER_OVERHEAD;
        Config {
            max_unsent_bytes: one_message,
            ..Config::default()
        }
        .validate()
        .unwrap();
        assert_eq!(
            field_at_fault(|c| c.max_unsent_bytes = one_message - 1),
            "max_unsent_bytes"
        );
        // A burst of 0 is an error only with a rate limit.
        Config {
            publish_rate: 0,
            publish_burst: 0,
            ..Config::default()
        }
        .validate()
        .unwrap();
        // The timeouts the list above leaves out.
        assert_eq!(
            field_at_fault(|c| c.sse_retry = Duration::ZERO),
            "sse_retry"
        );
        assert_eq!(
            field_at_fault(|c| c.sse_heartbeat = Duration::ZERO),
            "sse_heartbeat"
        );
        assert_eq!(
            field_at_fault(|c| c.broker_timeout = Duration::ZERO),
            "broker_timeout"
        );
        // Hosts as `Host` carries them.
        for good in ["chat.example", "127.0.0.1:8080", "[::1]:80", "a-b"] {
            check_host(good).unwrap();
        }
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        check_origin("https://chat.example.com").unwrap();
        check_origin("http://b.example:8080").unwrap();
        assert!(check_origin("example.com").is_err());
        assert!(check_origin("https://x/").is_err());
        assert!(check_origin("https://x?y").is_err());
    }
}
