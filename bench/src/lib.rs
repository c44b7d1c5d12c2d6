//! Shared pieces of Parlor's benchmark tools: loopback URL parsing, process statistics from
//! `/proc`, percentiles, a raw HTTP/1.1 response parser, and a JSON-line writer for
//! the results file (JSON through serde_json).
//!
//! No HTTP library is used on purpose: the load generator must cost the same against every
//! server, and must be cheap enough that the server, not the client, is what gets measured.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub mod net;

/// Parses `http://127.x.y.z:PORT` (or `http://localhost:PORT`) and refuses anything that is not
/// loopback: the tools generate heavy load and must never aim it at another host.
pub fn parse_loopback_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let hostport = rest.split('/').next().unwrap_or("");
    let hostport = hostport.replacen("localhost", "127.0.0.1", 1);
    let addr: SocketAddr = hostport
        .parse()
        .map_err(|_| format!("{url}: expected http://127.0.0.1:PORT (an IP address and port)"))?;
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => Ok(addr),
        IpAddr::V6(v6) if v6.is_loopback() => Ok(addr),
        _ => Err(format!(
            "{url}: refusing a non-loopback address (load generation is loopback only)"
        )),
    }
}

/// Resident set size of a process in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12), in clock ticks.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let hz = clock_ticks_per_second();
    Some(Duration::from_micros((utime + stime) * 1_000_000 / hz))
}

#[allow(unsafe_code)]
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
#[allow(unsafe_code)]
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write or read only the struct we pass, which lives on the stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// Sorted-sample statistics of latencies in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    us: Vec<u64>,
    sorted: bool,
}

impl Samples {
    pub fn new() -> Self {
        Samples::default()
    }
    pub fn push(&mut self, d: Duration) {
        self.us.push(d.as_micros() as u64);
        self.sorted = false;
    }
    pub fn len(&self) -> usize {
        self.us.len()
    }
    pub fn is_empty(&self) -> bool {
        self.us.is_empty()
    }
    fn sort(&mut self) {
        if !self.sorted {
            self.us.sort_unstable();
            self.sorted = true;
        }
    }
    /// The `q`-quantile (0.0..=1.0) in microseconds, nearest rank; 0 when empty.
    pub fn quantile_us(&mut self, q: f64) -> u64 {
        if self.us.is_empty() {
            return 0;
        }
        self.sort();
        let rank = ((q * self.us.len() as f64).ceil() as usize).clamp(1, self.us.len());
        self.us[rank - 1]
    }
    pub fn max_us(&mut self) -> u64 {
        self.quantile_us(1.0)
    }
}

/// The median of a list of numbers (0 when empty).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Position just past the first `\r\n\r\n` in `buf`, if any.
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4)
}

/// One parsed HTTP/1.1 response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `Parlor-Cursor` header, if present.
    pub cursor: Option<String>,
    /// The `Parlor-Gap` header, if present.
    pub gap: Option<u64>,
    /// The server asked to close the connection after this response.
    pub close: bool,
}

/// Why a response could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    Malformed(&'static str),
}

/// Parses one complete response at the start of `buf`. `Ok(None)`: more bytes needed.
/// `Ok(Some((response, consumed)))` otherwise. Bodies framed by `Content-Length` or chunked;
/// a response with neither (and not 1xx/204/304) is refused, as the servers always frame.
/// `head_only`: the request was HEAD, so there is no body whatever the headers say.
pub fn parse_response(
    buf: &[u8],
    head_only: bool,
) -> Result<Option<(Response, usize)>, ParseError> {
    let Some(head_end) = find_head_end(buf) else {
        if buf.len() > 64 * 1024 {
            return Err(ParseError::Malformed("response head too large"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| ParseError::Malformed("response head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(ParseError::Malformed("bad status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::Malformed("bad status code"))?;
    let mut resp = Response {
        status,
        close: version == "HTTP/1.0",
        ..Response::default()
    };
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ParseError::Malformed("header line without colon"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse()
                    .map_err(|_| ParseError::Malformed("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                resp.close = true;
            } else if v.contains("keep-alive") {
                resp.close = false;
            }
        } else if name.eq_ignore_ascii_case("parlor-cursor") {
            resp.cursor = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("parlor-gap") {
            resp.gap = value.parse().ok();
        }
    }
    if head_only || status < 200 || status == 204 || status == 304 {
        return Ok(Some((resp, head_end)));
    }
    if chunked {
        return match parse_chunked(&buf[head_end..])? {
            None => Ok(None),
            Some((body, used)) => {
                resp.body = body;
                Ok(Some((resp, head_end + used)))
            }
        };
    }
    let Some(len) = content_length else {
        return Err(ParseError::Malformed("response without Content-Length"));
    };
    if buf.len() < head_end + len {
        return Ok(None);
    }
    resp.body = buf[head_end..head_end + len].to_vec();
    Ok(Some((resp, head_end + len)))
}

fn parse_chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ParseError> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let Some(eol) = memchr::memmem::find(&buf[pos..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[pos..pos + eol])
            .map_err(|_| ParseError::Malformed("bad chunk size"))?;
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16)
            .map_err(|_| ParseError::Malformed("bad chunk size"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                let Some(eol) = memchr::memmem::find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

/// Builds one JSON object line for the results file, field by field (serde_json writes it;
/// keys keep the order they were added in).
#[derive(Default)]
pub struct JsonLine {
    fields: Vec<(String, serde_json::Value)>,
}

impl JsonLine {
    pub fn new() -> Self {
        JsonLine::default()
    }
    fn field(mut self, k: &str, v: serde_json::Value) -> Self {
        self.fields.push((k.to_string(), v));
        self
    }
    pub fn str(self, k: &str, v: &str) -> Self {
        self.field(k, v.into())
    }
    /// A number: whole values as integers, others rounded to 3 decimals, non-finite as null.
    pub fn num(self, k: &str, v: f64) -> Self {
        let v = if !v.is_finite() {
            serde_json::Value::Null
        } else if v == v.trunc() && v.abs() < 1e15 {
            (v as i64).into()
        } else {
            ((v * 1000.0).round() / 1000.0).into()
        };
        self.field(k, v)
    }
    pub fn int(self, k: &str, v: u64) -> Self {
        self.field(k, v.into())
    }
    pub fn opt_int(self, k: &str, v: Option<u64>) -> Self {
        self.field(k, v.map_or(serde_json::Value::Null, Into::into))
    }
    pub fn null(self, k: &str) -> Self {
        self.field(k, serde_json::Value::Null)
    }
    pub fn finish(self) -> String {
        serde_json::to_string(&self).expect("the fields are plain JSON values")
    }
}

impl serde::Serialize for JsonLine {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.fields.len()))?;
        for (k, v) in &self.fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Appends a line to a file (creating it).
pub fn append_line(path: &str, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{line}")
}

/// Seconds since the Unix epoch, for stamping results.
pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(parse_loopback_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_loopback_url("http://127.3.4.5:1/x").is_ok());
        assert!(parse_loopback_url("http://localhost:80").is_ok());
        assert!(parse_loopback_url("http://[::1]:80").is_ok());
        assert!(parse_loopback_url("http://10.0.0.1:80").is_err());
        assert!(parse_loopback_url("https://127.0.0.1:80").is_err());
        assert!(parse_loopback_url("http://example.com:80").is_err());
    }

    #[test]
    fn responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nParlor-Cursor: a-1\r\n\r\nhiHTTP/1.1";
        let (resp, used) = parse_response(r, false).unwrap().unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"hi");
        assert_eq!(resp.cursor.as_deref(), Some("a-1"));
        assert_eq!(used, r.len() - 8);
        assert_eq!(parse_response(&r[..20], false), Ok(None));
        let c =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1\r\n!\r\n0\r\n\r\n";
        let (resp, used) = parse_response(c, false).unwrap().unwrap();
        assert_eq!(resp.body, b"hi!");
        assert_eq!(used, c.len());
        let n = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        let (resp, _) = parse_response(n, false).unwrap().unwrap();
        assert!(resp.close);
    }

    #[test]
    fn quantiles() {
        let mut s = Samples::new();
        for i in 1..=100 {
            s.push(Duration::from_micros(i));
        }
        assert_eq!(s.quantile_us(0.5), 50);
        assert_eq!(s.quantile_us(0.99), 99);
        assert_eq!(s.max_us(), 100);
    }
}
