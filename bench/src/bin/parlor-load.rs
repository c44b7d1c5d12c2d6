//! `parlor-load`: a load generator for any long-polling HTTP/1.1 server on loopback.
//!
//! One thread, one mio event loop, raw HTTP/1.1 bytes: the same client cost against every server.
//! Modes (see `--help`): `idle`, `fanout`, `stream`, `sse`, `http`. Every run is bounded by counts and
//! timeouts, and the target must be a loopback address. One human line per result on stdout;
//! `--json FILE` also appends one JSON object per result to FILE.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parlor_bench::net::{Ev, Net};
use parlor_bench::{
    cpu_time, median, parse_loopback_url, raise_nofile_limit, rss_kib, unix_time, JsonLine, Samples,
};

const USAGE: &str = "\
usage: parlor-load MODE --url http://127.0.0.1:PORT [options]

modes:
  idle     N held polls (GET /subscribe?room=ROOM); server RSS before/after, bytes per held poll
  fanout   N held polls, one POST /publish per round; time to each complete delivery
  stream   N subscribers re-polling, P publishers at full speed for T seconds; loss, order, rates
  sse      N Server-Sent Events streams (GET /events), P publishers at full speed for T seconds;
           delivery latency per event, events/s, missed/duplicated/out of order per stream
  sse-idle   like idle, with N open event streams (GET /events); bytes per open stream
  sse-fanout like fanout, with N open event streams; time to each stream reading the event
  http     C keep-alive connections doing GET / or POST /publish for T seconds

options:
  --url URL            server base URL, loopback only (required); repeat it (or --urls A,B,C)
                       to spread the connections round-robin over several nodes: publishes
                       of fanout/sse-fanout go to the first, stream/sse publishers round-robin
  --pid PID            server process id, for RSS and CPU time from /proc; repeat it for
                       several nodes (RSS and CPU are then their sums)
  --redis-pid PID      a Redis server's process id: its CPU seconds are reported too
  --label NAME         server name written with the results (default: the URL)
  --json FILE          append one JSON line per result to FILE
  -n, --n N            held polls / subscribers (idle 1000, fanout 1000, stream and sse 100;
                       max 100000)
  --rounds R           fanout rounds (default 5, max 100)
  --publishers P       stream publishers (default 4, max 64)
  --duration SECS      stream/http duration (default 10, max 300)
  --connections C      http connections (default 50, max 10000)
  --request get|publish  http request (default get)
  --cursor json|plain|none  stream polling: JSON batches with since=, plain with since=, or no
                       cursor at all (default json)
  --room NAME          room (default bench; stream uses a fresh room per run)
  --msg-bytes N        message size for stream/fanout (default 32)
  --sources K          spread connections over 127.0.0.1..127.0.0.K (default 32; 0 = kernel)
  --settle-ms MS       wait after the polls are sent before measuring/publishing
                       (default 300 + N/20)
  --timeout SECS       bound on connecting and on each round or drain (default 30)
";

#[derive(Clone, Debug)]
struct Opts {
    mode: String,
    url: String,
    target: SocketAddr,
    /// Every node, `target` first (one when a single --url is given).
    targets: Vec<SocketAddr>,
    pids: Vec<u32>,
    redis_pid: Option<u32>,
    label: String,
    json: Option<String>,
    n: Option<usize>,
    rounds: usize,
    publishers: usize,
    duration: Duration,
    connections: usize,
    request: String,
    cursor: String,
    room: String,
    msg_bytes: usize,
    sources: usize,
    settle: Option<Duration>,
    timeout: Duration,
}

fn parse_args() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1).peekable();
    let mut mode = None;
    let mut urls: Vec<String> = Vec::new();
    let mut o = Opts {
        mode: String::new(),
        url: String::new(),
        target: "127.0.0.1:0".parse().map_err(|_| "addr")?,
        targets: Vec::new(),
        pids: Vec::new(),
        redis_pid: None,
        label: String::new(),
        json: None,
        n: None,
        rounds: 5,
        publishers: 4,
        duration: Duration::from_secs(10),
        connections: 50,
        request: "get".into(),
        cursor: "json".into(),
        room: "bench".into(),
        msg_bytes: 32,
        sources: 32,
        settle: None,
        timeout: Duration::from_secs(30),
    };
    fn num<T>(name: &str, v: Option<String>, max: T) -> Result<T, String>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let v = v.ok_or_else(|| format!("{name} needs a value"))?;
        let n: T = v.parse().map_err(|_| format!("{name} {v}: not a number"))?;
        if n > max {
            return Err(format!("{name} {v}: at most {max}"));
        }
        Ok(n)
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--url" => urls.push(args.next().ok_or("--url needs a value")?),
            "--urls" => {
                let v = args.next().ok_or("--urls needs a value")?;
                urls.extend(v.split(',').filter(|u| !u.is_empty()).map(String::from));
            }
            "--pid" => o.pids.push(num("--pid", args.next(), u32::MAX)?),
            "--redis-pid" => o.redis_pid = Some(num("--redis-pid", args.next(), u32::MAX)?),
            "--label" => o.label = args.next().unwrap_or_default(),
            "--json" => o.json = args.next(),
            "-n" | "--n" => o.n = Some(num("-n", args.next(), 100_000)?),
            "--rounds" => o.rounds = num("--rounds", args.next(), 100)?.max(1),
            "--publishers" => o.publishers = num("--publishers", args.next(), 64)?.max(1),
            "--duration" => {
                o.duration =
                    Duration::from_secs_f64(num("--duration", args.next(), 300.0f64)?.max(0.1))
            }
            "--connections" => o.connections = num("--connections", args.next(), 10_000)?.max(1),
            "--request" => o.request = args.next().unwrap_or_default(),
            "--cursor" => o.cursor = args.next().unwrap_or_default(),
            "--room" => o.room = args.next().unwrap_or_default(),
            "--msg-bytes" => o.msg_bytes = num("--msg-bytes", args.next(), 16_000)?,
            "--sources" => o.sources = num("--sources", args.next(), 250)?,
            "--settle-ms" => {
                o.settle = Some(Duration::from_millis(num(
                    "--settle-ms",
                    args.next(),
                    60_000,
                )?))
            }
            "--timeout" => {
                o.timeout =
                    Duration::from_secs_f64(num("--timeout", args.next(), 600.0f64)?.max(1.0))
            }
            m if mode.is_none() && !m.starts_with('-') => mode = Some(m.to_string()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    o.mode = mode.ok_or("no mode given")?;
    if urls.is_empty() {
        return Err("--url is required".into());
    }
    if urls.len() > 64 {
        return Err("at most 64 URLs".into());
    }
    o.targets = urls
        .iter()
        .map(|u| parse_loopback_url(u))
        .collect::<Result<_, _>>()?;
    o.target = o.targets[0];
    o.url = urls.join(",");
    if o.label.is_empty() {
        o.label = o.url.clone();
    }
    if !matches!(o.request.as_str(), "get" | "publish") {
        return Err(format!("--request {}: get or publish", o.request));
    }
    if !matches!(o.cursor.as_str(), "json" | "plain" | "none") {
        return Err(format!("--cursor {}: json, plain or none", o.cursor));
    }
    if o.room.is_empty()
        || o.room.len() > 40
        || !o
            .room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("--room: 1-40 characters of [A-Za-z0-9_-]".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("parlor-load: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match o.mode.as_str() {
        "idle" => idle(&o),
        "fanout" => fanout(&o),
        "stream" => stream(&o),
        "sse" => sse(&o),
        "sse-idle" => sse_idle(&o),
        "sse-fanout" => sse_fanout(&o),
        "http" => http(&o),
        m => Err(format!("unknown mode {m}")),
    };
    match result {
        Ok(lines) => {
            for (mut human, mut line) in lines {
                if o.redis_pid.is_some() {
                    let redis = f64::from_bits(REDIS_CPU_BITS.load(Ordering::Relaxed));
                    let _ = write!(human, ", redis cpu {redis:.2} s");
                    line = line.num("redis_cpu_s", redis);
                }
                if o.targets.len() > 1 {
                    line = line.int("nodes", o.targets.len() as u64);
                }
                println!("{human}");
                if let Some(path) = &o.json {
                    if let Err(e) = parlor_bench::append_line(path, &line.finish()) {
                        eprintln!("parlor-load: {path}: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("parlor-load: {}: {e}", o.mode);
            ExitCode::from(1)
        }
    }
}

type Results = Result<Vec<(String, JsonLine)>, String>;

fn base(o: &Opts) -> JsonLine {
    JsonLine::new()
        .str("mode", &o.mode)
        .str("server", &o.label)
        .int("time", unix_time())
}

fn host(o: &Opts) -> String {
    o.target.to_string()
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// CPU time of the server (from `--pid`) and of this load generator, taken at a point.
struct CpuMark {
    server: Option<Duration>,
    client: Option<Duration>,
    redis: Option<Duration>,
}

/// Redis's CPU seconds over the last measurement (`--redis-pid`), as f64 bits; NaN when unknown.
static REDIS_CPU_BITS: AtomicU64 = AtomicU64::new(0x7ff8_0000_0000_0000);

/// Sum of the servers' CPU time (`--pid`, repeated); None when none is given or one is gone.
fn server_cpu(o: &Opts) -> Option<Duration> {
    if o.pids.is_empty() {
        return None;
    }
    o.pids.iter().map(|&p| cpu_time(p)).sum()
}

/// Sum of the servers' RSS in KiB; None when none is given or one is gone.
fn server_rss(o: &Opts) -> Option<u64> {
    if o.pids.is_empty() {
        return None;
    }
    o.pids.iter().map(|&p| rss_kib(p)).sum()
}

/// A pool aimed at every node: tags below `below` (the subscribers, connections) round-robin,
/// the others (publishers) round-robin from the first node.
fn new_net(o: &Opts, below: usize) -> Result<Net, String> {
    let mut net = Net::new(o.target, o.sources).map_err(|e| e.to_string())?;
    net.spread(&o.targets, below);
    Ok(net)
}

impl CpuMark {
    fn now(o: &Opts) -> CpuMark {
        CpuMark {
            server: server_cpu(o),
            client: cpu_time(std::process::id()),
            redis: o.redis_pid.and_then(cpu_time),
        }
    }
    /// Seconds of CPU the server and the client used since the mark (NaN when unknown).
    fn since(&self, o: &Opts) -> (f64, f64) {
        let later = CpuMark::now(o);
        let d = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64(),
            _ => f64::NAN,
        };
        REDIS_CPU_BITS.store(d(self.redis, later.redis).to_bits(), Ordering::Relaxed);
        (d(self.server, later.server), d(self.client, later.client))
    }
}

fn subscribe_request(o: &Opts, room: &str, since: Option<&str>, json: bool) -> Vec<u8> {
    let mut target = format!("/subscribe?room={room}");
    if let Some(s) = since {
        let _ = write!(target, "&since={s}");
    }
    if json {
        target.push_str("&format=json");
    }
    format!("GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", host(o)).into_bytes()
}

fn publish_request(o: &Opts, room: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /publish?room={room} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        host(o),
        body.len()
    )
    .into_bytes()
}

/// Opens `n` connections (tags 0..n) and sends `request` on each once connected, at most
/// `inflight` not yet written at a time. Returns which tags got their request written;
/// responses arriving meanwhile are handed to `on_event`.
fn open_and_send(
    net: &mut Net,
    n: usize,
    request: &[u8],
    deadline: Instant,
    ids: &mut [Option<usize>],
    mut on_event: impl FnMut(&Ev),
) -> Result<(Vec<bool>, usize), String> {
    // Below the 128-entry accept queue many listeners get by default (mio's and std's bind),
    // so that no SYN is dropped and retried a second later.
    let inflight_max = 100;
    let mut written = vec![false; n];
    let mut next = 0;
    let mut pending = 0usize;
    let mut done = 0usize;
    let mut failed = 0usize;
    let mut evs = Vec::new();
    let mut first_error: Option<String> = None;
    while done + failed < n {
        while next < n && pending < inflight_max {
            match net.connect(next) {
                Ok(id) => {
                    ids[next] = Some(id);
                    net.send(id, request, &mut evs);
                    pending += 1;
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("connect: {e}"));
                }
            }
            next += 1;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out opening connections: {done} written, {failed} failed of {n}{}",
                first_error
                    .map(|e| format!(" (first error: {e})"))
                    .unwrap_or_default()
            ));
        }
        net.turn(Duration::from_millis(50), &mut evs);
        for ev in evs.drain(..) {
            match &ev {
                Ev::Written(t) if *t < n && !written[*t] => {
                    written[*t] = true;
                    done += 1;
                    pending -= 1;
                }
                Ev::Closed(t, why) if *t < n => {
                    ids[*t] = None;
                    if !written[*t] {
                        failed += 1;
                        pending -= 1;
                        first_error.get_or_insert_with(|| why.clone());
                    }
                }
                _ => {}
            }
            on_event(&ev);
        }
    }
    if let Some(e) = first_error {
        eprintln!("parlor-load: {failed} of {n} connections failed; first error: {e}");
    }
    Ok((written, failed))
}

/// Keeps the event loop running for `d`, handing events to `on_event`.
fn run_for(net: &mut Net, d: Duration, mut on_event: impl FnMut(&Ev)) {
    let end = Instant::now() + d;
    let mut evs = Vec::new();
    loop {
        let now = Instant::now();
        if now >= end {
            return;
        }
        net.turn((end - now).min(Duration::from_millis(50)), &mut evs);
        for ev in evs.drain(..) {
            on_event(&ev);
        }
    }
}

fn default_settle(o: &Opts, n: usize) -> Duration {
    o.settle
        .unwrap_or(Duration::from_millis(300 + n as u64 / 20))
}

// ---------------------------------------------------------------------------------------------

fn idle(o: &Opts) -> Results {
    let n = o.n.unwrap_or(1000);
    let limit = raise_nofile_limit();
    if n as u64 + 32 > limit {
        return Err(format!(
            "-n {n} needs more file descriptors than the limit {limit} allows"
        ));
    }
    let mut net = new_net(o, n)?;
    let rss0 = server_rss(o);
    let cpu0 = CpuMark::now(o);
    let start = Instant::now();
    let req = subscribe_request(o, &o.room, None, false);
    let mut ids = vec![None; n];
    let mut answered = vec![false; n];
    let mut closed = vec![false; n];
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut count = |ev: &Ev| match ev {
        Ev::Response(t, r, _) => {
            answered[*t] = true;
            *statuses.entry(r.status).or_default() += 1;
        }
        Ev::Closed(t, _) => closed[*t] = true,
        _ => {}
    };
    let (written, failed) =
        open_and_send(&mut net, n, &req, start + o.timeout, &mut ids, &mut count)?;
    let open_time = start.elapsed();
    // Let the server take in the last requests, then wait for its RSS to stop moving.
    run_for(&mut net, default_settle(o, n), &mut count);
    let mut rss1 = server_rss(o);
    if !o.pids.is_empty() {
        let mut stable = 0;
        for _ in 0..50 {
            run_for(&mut net, Duration::from_millis(100), &mut count);
            let r = server_rss(o);
            if r == rss1 {
                stable += 1;
                if stable >= 3 {
                    break;
                }
            } else {
                stable = 0;
                rss1 = r;
            }
        }
    }
    let (cpu, client_cpu) = cpu0.since(o);
    let answered_n = answered.iter().filter(|a| **a).count();
    let closed_by_server = (0..n).filter(|&t| written[t] && closed[t]).count();
    let held = (0..n)
        .filter(|&t| written[t] && !closed[t] && !answered[t])
        .count();
    net.close_all();
    run_for(&mut net, Duration::from_millis(1000), |_| {});
    let rss2 = server_rss(o);
    let per_poll = match (rss0, rss1) {
        (Some(a), Some(b)) if held > 0 => Some((b.saturating_sub(a) * 1024) as f64 / held as f64),
        _ => None,
    };
    let mut status_text = String::new();
    let mut sv: Vec<_> = statuses.iter().collect();
    sv.sort();
    for (s, c) in sv {
        let _ = write!(status_text, " {s}x{c}");
    }
    let human = format!(
        "idle    {:<16} n={n}: held {held}, {} B per held poll (RSS {} -> {} KiB, {} KiB after close), opened in {:.2} s, failed {failed}, answered early {answered_n}{}, closed by server {closed_by_server}, cpu: server {cpu:.2} s, client {client_cpu:.2} s",
        o.label,
        per_poll.map(|b| format!("{b:.0}")).unwrap_or("?".into()),
        rss0.map(|v| v.to_string()).unwrap_or("?".into()),
        rss1.map(|v| v.to_string()).unwrap_or("?".into()),
        rss2.map(|v| v.to_string()).unwrap_or("?".into()),
        open_time.as_secs_f64(),
        status_text,
    );
    let line = base(o)
        .int("n", n as u64)
        .int("held", held as u64)
        .int("failed", failed as u64)
        .int("answered", answered_n as u64)
        .int("closed_by_server", closed_by_server as u64)
        .opt_int("rss_before_kib", rss0)
        .opt_int("rss_held_kib", rss1)
        .opt_int("rss_after_close_kib", rss2)
        .num("bytes_per_poll", per_poll.unwrap_or(f64::NAN))
        .num("open_s", open_time.as_secs_f64())
        .num("server_cpu_s", cpu)
        .num("client_cpu_s", client_cpu);
    Ok(vec![(human, line)])
}

// ---------------------------------------------------------------------------------------------

fn fanout(o: &Opts) -> Results {
    let n = o.n.unwrap_or(1000);
    let limit = raise_nofile_limit();
    if n as u64 + 32 > limit {
        return Err(format!(
            "-n {n} needs more file descriptors than the limit {limit} allows"
        ));
    }
    let mut net = new_net(o, n)?;
    let cpu0 = CpuMark::now(o);
    let req = subscribe_request(o, &o.room, None, false);
    let mut ids: Vec<Option<usize>> = vec![None; n + 1];
    // Tag n is the publisher.
    let (written, _) = open_and_send(
        &mut net,
        n,
        &req,
        Instant::now() + o.timeout,
        &mut ids[..n],
        |_| {},
    )?;
    let mut evs = Vec::new();
    let pub_id = net.connect(n).map_err(|e| format!("publisher: {e}"))?;
    ids[n] = Some(pub_id);
    let mut all = Samples::new();
    let mut lasts = Vec::new();
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut lost_total = 0usize;
    let mut errors = 0usize;
    let mut early = 0usize;
    let mut waiting: Vec<bool> = written.clone();
    // Polls held when a publish went out, fewest over the rounds (N unless connects failed).
    let mut fewest_held = n;
    let body_pad = "x".repeat(o.msg_bytes.saturating_sub(16));
    for round in 0..o.rounds {
        // Every subscriber that is not waiting (answered last round, or failed) polls again.
        let mut to_send = Vec::new();
        for t in 0..n {
            if !waiting[t] {
                if ids[t].is_none() {
                    match net.connect(t) {
                        Ok(id) => ids[t] = Some(id),
                        Err(_) => continue,
                    }
                }
                to_send.push(t);
            }
        }
        for t in to_send {
            if let Some(id) = ids[t] {
                if net.send(id, &req, &mut evs) {
                    waiting[t] = true;
                }
            }
        }
        if ids[n].is_none() {
            ids[n] = Some(net.connect(n).map_err(|e| format!("publisher: {e}"))?);
        }
        // Let every poll reach the server and be held.
        run_for(&mut net, default_settle(o, n), |ev| match ev {
            Ev::Response(t, _, _) if *t < n => {
                early += 1;
                waiting[*t] = false;
            }
            Ev::Closed(t, _) => {
                ids[*t] = None;
                if *t < n {
                    waiting[*t] = false;
                }
            }
            _ => {}
        });
        for ev in evs.drain(..) {
            if let Ev::Closed(t, _) = ev {
                ids[t] = None;
                if t < n {
                    waiting[t] = false;
                }
            }
        }
        let expected = waiting.iter().filter(|w| **w).count();
        fewest_held = fewest_held.min(expected);
        let body = format!("fanout {round:04} {body_pad}");
        let publish = publish_request(o, &o.room, &body);
        let t0 = Instant::now();
        let Some(pid) = ids[n] else {
            return Err("publisher connection lost".into());
        };
        net.send(pid, &publish, &mut evs);
        let mut got = 0usize;
        let mut round_samples = Samples::new();
        let mut last = Duration::ZERO;
        let mut publish_ok = false;
        let deadline = t0 + o.timeout;
        while (got < expected || !publish_ok) && Instant::now() < deadline {
            net.turn(Duration::from_millis(50), &mut evs);
            for ev in evs.drain(..) {
                match ev {
                    Ev::Response(t, r, at) if t < n && waiting[t] => {
                        waiting[t] = false;
                        if r.status == 200 && r.body == body.as_bytes() {
                            let d = at.duration_since(t0);
                            round_samples.push(d);
                            all.push(d);
                            last = last.max(d);
                            got += 1;
                        } else {
                            errors += 1;
                        }
                    }
                    // A second response on a subscriber connection: not this round's delivery.
                    Ev::Response(t, _, _) if t < n => errors += 1,
                    Ev::Response(_, r, _) => {
                        publish_ok = true;
                        if r.status != 200 {
                            return Err(format!("publish answered {}", r.status));
                        }
                    }
                    Ev::Closed(t, why) => {
                        ids[t] = None;
                        if t == n {
                            return Err(format!("publisher connection closed: {why}"));
                        }
                        waiting[t] = false;
                    }
                    _ => {}
                }
            }
        }
        let lost = expected.saturating_sub(got);
        lost_total += lost;
        lasts.push(last.as_micros() as f64);
        p50s.push(round_samples.quantile_us(0.5) as f64);
        p99s.push(round_samples.quantile_us(0.99) as f64);
        // Anything still waiting is lost for this round; it keeps its poll open for the next.
    }
    let (cpu, client_cpu) = cpu0.since(o);
    net.close_all();
    let last_min = lasts.iter().cloned().fold(f64::INFINITY, f64::min);
    let last_max = lasts.iter().cloned().fold(0.0, f64::max);
    let last_med = median(&mut lasts);
    let p50 = median(&mut p50s);
    let p99 = median(&mut p99s);
    let human = format!(
        "fanout  {:<16} n={n} rounds={}: last {:.2} ms (min {:.2}, max {:.2}), p50 {:.2} ms, p99 {:.2} ms, lost {lost_total}, errors {errors}, answered before publish {early}, fewest held {fewest_held}, cpu: server {cpu:.2} s, client {client_cpu:.2} s",
        o.label,
        o.rounds,
        last_med / 1000.0,
        last_min / 1000.0,
        last_max / 1000.0,
        p50 / 1000.0,
        p99 / 1000.0,
    );
    let line = base(o)
        .int("n", n as u64)
        .int("rounds", o.rounds as u64)
        .num("last_us", last_med)
        .num("last_min_us", last_min)
        .num("last_max_us", last_max)
        .num("p50_us", p50)
        .num("p99_us", p99)
        .num("all_p99_us", all.quantile_us(0.99) as f64)
        .int("lost", lost_total as u64)
        .int("held_min", fewest_held as u64)
        .int("errors", errors as u64)
        .int("early", early as u64)
        .num("server_cpu_s", cpu)
        .num("client_cpu_s", client_cpu);
    Ok(vec![(human, line)])
}

// ---------------------------------------------------------------------------------------------

/// What one subscriber saw of one publisher's sequence numbers.
#[derive(Default, Clone)]
struct Seen {
    bits: Vec<u64>,
    max: u64,
}

impl Seen {
    /// Records `seq`; returns (duplicate, out of order).
    fn record(&mut self, seq: u64) -> (bool, bool) {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) != 0 {
            return (true, false);
        }
        self.bits[w] |= 1 << b;
        let ooo = seq < self.max;
        self.max = self.max.max(seq);
        (false, ooo)
    }
    fn has(&self, seq: u64) -> bool {
        self.bits
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }
}

#[derive(Clone, Default)]
struct Sub {
    cursor: String,
    seen: Vec<Seen>,
    delivered: u64,
    delivered_in_window: u64,
    dup: u64,
    ooo: u64,
    gap_reported: u64,
    bad: u64,
}

fn parse_text(text: &str) -> Option<(usize, u64)> {
    let mut it = text.split(' ');
    let p = it.next()?.strip_prefix('p')?.parse().ok()?;
    let s = it.next()?.parse().ok()?;
    Some((p, s))
}

fn stream(o: &Opts) -> Results {
    let n = o.n.unwrap_or(100);
    let p = o.publishers;
    raise_nofile_limit();
    let room = format!(
        "{}-{}-{}",
        o.room,
        std::process::id(),
        unix_time() % 1_000_000
    );
    let mode = o.cursor.as_str();
    let mut net = new_net(o, n)?;
    let poll = |cursor: &str| -> Vec<u8> {
        match mode {
            "json" => subscribe_request(o, &room, Some(cursor), true),
            "plain" => subscribe_request(o, &room, Some(cursor), false),
            _ => subscribe_request(o, &room, None, false),
        }
    };
    let mut subs = vec![
        Sub {
            cursor: "0".into(),
            seen: vec![Seen::default(); p],
            ..Sub::default()
        };
        n
    ];
    let mut ids: Vec<Option<usize>> = vec![None; n + p];
    let first = poll("0");
    let mut early: Vec<(usize, parlor_bench::Response)> = Vec::new();
    open_and_send(
        &mut net,
        n,
        &first,
        Instant::now() + o.timeout,
        &mut ids[..n],
        |ev| {
            if let Ev::Response(t, r, _) = ev {
                early.push((*t, r.clone()));
            }
        },
    )?;
    run_for(&mut net, default_settle(o, n), |ev| {
        if let Ev::Response(t, r, _) = ev {
            early.push((*t, r.clone()));
        }
    });
    let mut evs = Vec::new();
    for i in 0..p {
        ids[n + i] = Some(net.connect(n + i).map_err(|e| format!("publisher: {e}"))?);
    }
    let pad = "x".repeat(o.msg_bytes.saturating_sub(16));
    let body_of = |i: usize, seq: u64| format!("p{i} {seq:08} {pad}");
    let mut next_seq = vec![1u64; p];
    let mut acked = vec![0u64; p];
    let mut publish_errors = 0u64;
    let mut publish_statuses: HashMap<u16, u64> = HashMap::new();
    let mut sub_errors = 0u64;
    let mut reconnects = 0u64;
    let mut polls = 0u64;
    let cpu0 = CpuMark::now(o);
    let start = Instant::now();
    let end = start + o.duration;
    for i in 0..p {
        let req = publish_request(o, &room, &body_of(i, 1));
        if let Some(id) = ids[n + i] {
            net.send(id, &req, &mut evs);
        }
    }
    // Responses that arrived before publishing began (204s, or a server answering at once).
    let mut pending: Vec<(usize, parlor_bench::Response)> = early;
    let mut drain_end: Option<Instant> = None;
    let mut last_delivery = start;
    loop {
        let now = Instant::now();
        if now >= end && drain_end.is_none() {
            drain_end = Some(now + o.timeout.min(Duration::from_secs(3)));
        }
        if let Some(de) = drain_end {
            if now >= de {
                break;
            }
            // Done early when every subscriber has every acknowledged message.
            if mode != "none"
                && subs
                    .iter()
                    .all(|s| (0..p).all(|i| acked[i] == 0 || (s.seen[i].max >= acked[i])))
            {
                break;
            }
            if mode == "none"
                && now.duration_since(last_delivery.max(end)) > Duration::from_millis(500)
            {
                break;
            }
        }
        net.turn(Duration::from_millis(20), &mut evs);
        let mut resend: Vec<usize> = Vec::new();
        for ev in evs.drain(..) {
            match ev {
                Ev::Response(t, r, _) if t < n => pending.push((t, r)),
                Ev::Response(t, r, _) => {
                    let i = t - n;
                    *publish_statuses.entry(r.status).or_default() += 1;
                    if r.status == 200 {
                        acked[i] = next_seq[i];
                        next_seq[i] += 1;
                    } else {
                        publish_errors += 1;
                        if publish_errors > 100_000 {
                            return Err("too many publish errors".into());
                        }
                    }
                    if Instant::now() < end {
                        resend.push(t);
                    }
                }
                Ev::Closed(t, why) => {
                    ids[t] = None;
                    reconnects += 1;
                    if reconnects > 10_000 {
                        return Err(format!("too many closed connections (last: {why})"));
                    }
                    if let Ok(id) = net.connect(t) {
                        ids[t] = Some(id);
                        if t < n || Instant::now() < end {
                            resend.push(t);
                        }
                    }
                }
                _ => {}
            }
        }
        let now = Instant::now();
        for (t, r) in pending.drain(..) {
            let s = &mut subs[t];
            polls += 1;
            match r.status {
                200 => {
                    let mut texts: Vec<String> = Vec::new();
                    if mode == "json" {
                        match serde_json::from_slice::<BatchRead>(&r.body) {
                            Ok(b) => {
                                texts = b.texts;
                                if let Some(next) = b.next {
                                    s.cursor = next;
                                }
                                s.gap_reported += b.gap as u64;
                            }
                            Err(_) => s.bad += 1,
                        }
                    } else {
                        texts.push(String::from_utf8_lossy(&r.body).into_owned());
                        if let Some(c) = r.cursor {
                            s.cursor = c;
                        }
                        s.gap_reported += r.gap.unwrap_or(0);
                    }
                    for text in texts {
                        match parse_text(&text) {
                            Some((pi, seq)) if pi < p => {
                                let (dup, ooo) = s.seen[pi].record(seq);
                                s.delivered += 1;
                                if now <= end {
                                    s.delivered_in_window += 1;
                                }
                                s.dup += dup as u64;
                                s.ooo += ooo as u64;
                                last_delivery = now;
                            }
                            _ => s.bad += 1,
                        }
                    }
                }
                204 => {
                    if let Some(c) = r.cursor {
                        s.cursor = c;
                    }
                }
                _ => {
                    sub_errors += 1;
                    if sub_errors > 100_000 {
                        return Err(format!(
                            "too many subscriber errors (last status {})",
                            r.status
                        ));
                    }
                }
            }
            resend.push(t);
        }
        for t in resend {
            let Some(id) = ids[t] else { continue };
            if t < n {
                let req = poll(&subs[t].cursor);
                net.send(id, &req, &mut evs);
            } else {
                let i = t - n;
                let req = publish_request(o, &room, &body_of(i, next_seq[i]));
                net.send(id, &req, &mut evs);
            }
        }
    }
    let window = o.duration.as_secs_f64();
    let (cpu, client_cpu) = cpu0.since(o);
    net.close_all();
    let published: u64 = acked.iter().sum();
    let mut missed_total = 0u64;
    let mut missed_max = 0u64;
    let mut subs_missing = 0u64;
    let (mut dup, mut ooo, mut delivered, mut in_window, mut bad, mut gap_rep) = (0, 0, 0, 0, 0, 0);
    for s in &subs {
        let mut missed = 0;
        for (i, &a) in acked.iter().enumerate() {
            missed += (1..=a).filter(|&q| !s.seen[i].has(q)).count() as u64;
        }
        missed_total += missed;
        missed_max = missed_max.max(missed);
        subs_missing += (missed > 0) as u64;
        dup += s.dup;
        ooo += s.ooo;
        delivered += s.delivered;
        in_window += s.delivered_in_window;
        bad += s.bad;
        gap_rep += s.gap_reported;
    }
    let expected = published * n as u64;
    let human = format!(
        "stream  {:<16} n={n} p={p} {}s cursor={mode}: {:.0} publishes/s, {:.0} deliveries/s, missed {missed_total} of {expected} ({:.2}%, {subs_missing} subscribers, max {missed_max}), duplicated {dup}, out of order {ooo}, polls {polls}, publish errors {publish_errors}, poll errors {sub_errors}, unparsable {bad}, cpu: server {cpu:.2} s, client {client_cpu:.2} s",
        o.label,
        window,
        published as f64 / window,
        in_window as f64 / window,
        if expected > 0 { missed_total as f64 * 100.0 / expected as f64 } else { 0.0 },
    );
    let line = base(o)
        .int("n", n as u64)
        .int("publishers", p as u64)
        .num("duration_s", window)
        .str("cursor", mode)
        .int("published", published)
        .num("publishes_per_s", published as f64 / window)
        .num("deliveries_per_s", in_window as f64 / window)
        .int("delivered", delivered)
        .int("expected", expected)
        .int("missed", missed_total)
        .int("missed_max_per_sub", missed_max)
        .int("subs_missing", subs_missing)
        .int("duplicated", dup)
        .int("out_of_order", ooo)
        .int("gap_reported", gap_rep)
        .int("polls", polls)
        .int("publish_errors", publish_errors)
        .int("poll_errors", sub_errors)
        .int("unparsable", bad)
        .num("server_cpu_s", cpu)
        .num("client_cpu_s", client_cpu);
    Ok(vec![(human, line)])
}

/// What the `stream` run reads of a JSON batch answer: every `messages[].text`, `next` and
/// `gap`, parsed straight from the body without building a `serde_json::Value` (a map and
/// strings per message, which made up much of the load generator's CPU in that run, as the
/// SSE reader's per-event strings did in the `sse` run).
#[derive(Default)]
struct BatchRead {
    texts: Vec<String>,
    next: Option<String>,
    gap: f64,
}

impl<'de> serde::Deserialize<'de> for BatchRead {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Batch;
        impl<'de> serde::de::Visitor<'de> for Batch {
            type Value = BatchRead;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a batch object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<BatchRead, A::Error> {
                let mut b = BatchRead::default();
                while let Some(key) = map.next_key::<&str>()? {
                    match key {
                        "messages" => map.next_value_seed(Texts(&mut b.texts))?,
                        "next" => b.next = map.next_value()?,
                        "gap" => b.gap = map.next_value::<Option<f64>>()?.unwrap_or(0.0),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(b)
            }
        }
        d.deserialize_map(Batch)
    }
}

/// The `messages` array of a batch: each one's `text`, in order.
struct Texts<'a>(&'a mut Vec<String>);

impl<'de> serde::de::DeserializeSeed<'de> for Texts<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Texts<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of messages")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Text(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// One message object of a batch: its `text` is pushed.
struct Text<'a>(&'a mut Vec<String>);

impl<'de> serde::de::DeserializeSeed<'de> for Text<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Text<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a message object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<&str>()? {
            if key == "text" {
                self.0.push(map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

/// One Server-Sent Events stream as the load generator reads it: the head, then chunks, then
/// events; the data of message events comes out.
///
/// Built to cost the load generator little per event (it reads every event of every stream,
/// and a generator that is the bottleneck measures itself): bytes are parsed where they lie
/// when nothing is left over from the previous read, lines are found with `memchr`, and a
/// one-line event's data is handed out as a slice of the read, without a copy.
#[derive(Default)]
struct EventReader {
    /// Raw bytes left over from earlier reads (an incomplete head or chunk).
    buf: Vec<u8>,
    head_done: bool,
    chunked: bool,
    /// De-chunked bytes of an incomplete event.
    body: Vec<u8>,
    /// An event's data of several lines, joined.
    joined: Vec<u8>,
}

impl EventReader {
    /// Takes bytes read; returns the `data` of every complete message event (not `ready`, `gap`,
    /// `reset` or comments), or an error for a stream that is not one.
    fn push(&mut self, bytes: &[u8], out: &mut Vec<String>) -> Result<(), String> {
        self.push_with(bytes, |data| {
            out.push(String::from_utf8_lossy(data).into_owned())
        })
    }

    /// Like [`push`](Self::push), handing each message event's data to `on_data`.
    fn push_with(&mut self, bytes: &[u8], mut on_data: impl FnMut(&[u8])) -> Result<(), String> {
        if !self.head_done {
            self.buf.extend_from_slice(bytes);
            let Some(end) = parlor_bench::find_head_end(&self.buf) else {
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") || !head.contains("text/event-stream") {
                return Err(format!("not an event stream: {head:?}"));
            }
            self.chunked = head.contains("transfer-encoding: chunked");
            self.buf.drain(..end);
            self.head_done = true;
            let rest = std::mem::take(&mut self.buf);
            let result = self.body_bytes(&rest, &mut on_data);
            return result;
        }
        if self.buf.is_empty() {
            return self.body_bytes(bytes, &mut on_data);
        }
        let mut rest = std::mem::take(&mut self.buf);
        rest.extend_from_slice(bytes);
        self.body_bytes(&rest, &mut on_data)
    }

    /// Takes body bytes (chunked or not) that follow what `buf` held; keeps what is incomplete.
    fn body_bytes(&mut self, bytes: &[u8], on_data: &mut impl FnMut(&[u8])) -> Result<(), String> {
        if !self.chunked {
            self.events(bytes, on_data);
            return Ok(());
        }
        let mut at = 0;
        // A chunk's size line ends at its first LF (after a CR).
        while let Some(lf) = memchr::memchr(b'\n', &bytes[at..]) {
            let line = lf
                .checked_sub(1)
                .filter(|&cr| bytes[at + cr] == b'\r')
                .ok_or("bad chunk size")?;
            let size = std::str::from_utf8(&bytes[at..at + line])
                .ok()
                .and_then(|h| usize::from_str_radix(h, 16).ok())
                .ok_or("bad chunk size")?;
            let data = at + line + 2;
            if bytes.len() < data + size + 2 {
                break;
            }
            self.events(&bytes[data..data + size], on_data);
            at = data + size + 2;
        }
        self.buf.extend_from_slice(&bytes[at..]);
        Ok(())
    }

    /// Takes de-chunked bytes: every complete event in `body` and them, and keeps the rest.
    fn events(&mut self, bytes: &[u8], on_data: &mut impl FnMut(&[u8])) {
        if self.body.is_empty() {
            let used = parse_events(bytes, &mut self.joined, on_data);
            self.body.extend_from_slice(&bytes[used..]);
        } else {
            let mut body = std::mem::take(&mut self.body);
            body.extend_from_slice(bytes);
            let used = parse_events(&body, &mut self.joined, on_data);
            body.drain(..used);
            self.body = body;
        }
    }
}

/// Parses the complete events at the start of `s`, handing each message event's data (its
/// `data:` lines joined with LF) to `on_data`; returns how many bytes they took. An event with
/// an `event:` line (`ready`, `gap`, `reset`) and a comment are skipped.
fn parse_events(s: &[u8], joined: &mut Vec<u8>, on_data: &mut impl FnMut(&[u8])) -> usize {
    let mut used = 0;
    let mut at = 0;
    // This event so far: its one data line, or `joined` once there are several.
    let mut data: Option<&[u8]> = None;
    let mut lines = 0;
    let mut skip = false;
    while let Some(nl) = memchr::memchr(b'\n', &s[at..]) {
        let line = &s[at..at + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let first = at == used;
        at += nl + 1;
        if line.is_empty() {
            if !skip {
                match (lines, data) {
                    (0, _) => on_data(b""),
                    (1, Some(d)) => on_data(d),
                    _ => on_data(joined),
                }
            }
            (data, lines, skip, used) = (None, 0, false, at);
            continue;
        }
        if (first && line.starts_with(b":")) || line.starts_with(b"event: ") {
            skip = true;
        } else if let Some(d) = line.strip_prefix(b"data: ") {
            lines += 1;
            match lines {
                1 => data = Some(d),
                2 => {
                    joined.clear();
                    joined.extend_from_slice(data.unwrap_or_default());
                    joined.push(b'\n');
                    joined.extend_from_slice(d);
                }
                _ => {
                    joined.push(b'\n');
                    joined.extend_from_slice(d);
                }
            }
        }
    }
    used
}

/// The publisher and sequence number of a message text `p<i> <seq> ...` (the bytes of
/// [`parse_text`]'s texts, without a copy).
fn parse_text_bytes(text: &[u8]) -> Option<(usize, u64)> {
    let rest = text.strip_prefix(b"p")?;
    let sp = memchr::memchr(b' ', rest)?;
    let p = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
    let rest = &rest[sp + 1..];
    let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
    let s = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((p, s))
}

fn sse(o: &Opts) -> Results {
    let n = o.n.unwrap_or(100);
    let p = o.publishers;
    raise_nofile_limit();
    let room = format!(
        "{}-{}-{}",
        o.room,
        std::process::id(),
        unix_time() % 1_000_000
    );
    let mut net = new_net(o, n)?;
    let open = format!(
        "GET /events?room={room}&since=0 HTTP/1.1\r\nHost: {}\r\n\r\n",
        host(o)
    )
    .into_bytes();
    let mut ids: Vec<Option<usize>> = vec![None; n + p];
    let mut readers: Vec<EventReader> = (0..n).map(|_| EventReader::default()).collect();
    let mut subs = vec![
        Sub {
            seen: vec![Seen::default(); p],
            ..Sub::default()
        };
        n
    ];
    let mut evs = Vec::new();
    // Open the streams (raw connections), a bounded number connecting at a time.
    let deadline = Instant::now() + o.timeout;
    let mut next = 0;
    let mut connected = 0;
    while connected < n {
        while next < n && next - connected < 100 {
            let id = net.connect_raw(next).map_err(|e| format!("connect: {e}"))?;
            net.send(id, &open, &mut evs);
            ids[next] = Some(id);
            next += 1;
        }
        if Instant::now() > deadline {
            return Err(format!("timed out opening streams: {connected} of {n}"));
        }
        net.turn(Duration::from_millis(50), &mut evs);
        for ev in evs.drain(..) {
            match ev {
                Ev::Written(t) if t < n => connected += 1,
                // The head and the `ready` event: nothing is published yet.
                Ev::Bytes(t, bytes, _) if t < n => readers[t].push(&bytes, &mut Vec::new())?,
                Ev::Closed(_, why) => return Err(format!("a stream failed to open: {why}")),
                _ => {}
            }
        }
    }
    let mut early = Ok(());
    run_for(&mut net, default_settle(o, n), |ev| {
        if let Ev::Bytes(t, bytes, _) = ev {
            if *t < n && early.is_ok() {
                early = readers[*t].push(bytes, &mut Vec::new());
            }
        }
    });
    early?;
    for i in 0..p {
        ids[n + i] = Some(net.connect(n + i).map_err(|e| format!("publisher: {e}"))?);
    }
    let pad = "x".repeat(o.msg_bytes.saturating_sub(16));
    let body_of = |i: usize, seq: u64| format!("p{i} {seq:08} {pad}");
    let mut next_seq = vec![1u64; p];
    let mut acked = vec![0u64; p];
    // When each publish was sent, by publisher and sequence number (for delivery latency).
    let mut sent_at: Vec<Vec<Instant>> = vec![Vec::new(); p];
    let mut latency = Samples::new();
    let mut publish_errors = 0u64;
    let mut stream_errors = 0u64;
    let cpu0 = CpuMark::now(o);
    let start = Instant::now();
    let end = start + o.duration;
    for i in 0..p {
        if let Some(id) = ids[n + i] {
            sent_at[i].push(Instant::now());
            net.send(id, &publish_request(o, &room, &body_of(i, 1)), &mut evs);
        }
    }
    let mut spare = Vec::new();
    let mut drain_end: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= end && drain_end.is_none() {
            drain_end = Some(now + o.timeout.min(Duration::from_secs(3)));
        }
        if let Some(de) = drain_end {
            let complete = subs
                .iter()
                .all(|s| (0..p).all(|i| s.seen[i].max >= acked[i]));
            if now >= de || complete {
                break;
            }
        }
        net.turn(Duration::from_millis(20), &mut evs);
        // Sends below may add events: they are handled next turn (`spare` keeps the
        // allocation of the list being handled).
        std::mem::swap(&mut evs, &mut spare);
        for ev in spare.drain(..) {
            match ev {
                Ev::Bytes(t, bytes, at) if t < n => {
                    let s = &mut subs[t];
                    let read = readers[t].push_with(&bytes, |data| match parse_text_bytes(data) {
                        Some((pi, seq)) if pi < p && seq > 0 => {
                            let (dup, ooo) = s.seen[pi].record(seq);
                            s.delivered += 1;
                            if at <= end {
                                s.delivered_in_window += 1;
                            }
                            s.dup += dup as u64;
                            s.ooo += ooo as u64;
                            if let Some(&t0) = sent_at[pi].get(seq as usize - 1) {
                                latency.push(at.saturating_duration_since(t0));
                            }
                        }
                        _ => s.bad += 1,
                    });
                    net.recycle(bytes);
                    if let Err(e) = read {
                        return Err(format!("stream {t}: {e}"));
                    }
                }
                Ev::Response(t, r, _) if t >= n => {
                    let i = t - n;
                    if r.status == 200 {
                        acked[i] = next_seq[i];
                        next_seq[i] += 1;
                    } else {
                        publish_errors += 1;
                    }
                    if Instant::now() < end {
                        if let Some(id) = ids[t] {
                            let seq = next_seq[i];
                            sent_at[i].truncate(seq as usize - 1);
                            sent_at[i].push(Instant::now());
                            net.send(id, &publish_request(o, &room, &body_of(i, seq)), &mut evs);
                        }
                    }
                }
                Ev::Closed(t, why) => {
                    ids[t] = None;
                    if t < n {
                        stream_errors += 1;
                        eprintln!("parlor-load: stream {t} closed: {why}");
                    } else {
                        return Err(format!("publisher closed: {why}"));
                    }
                }
                _ => {}
            }
        }
    }
    let window = o.duration.as_secs_f64();
    let (cpu, client_cpu) = cpu0.since(o);
    net.close_all();
    let published: u64 = acked.iter().sum();
    let (mut missed_total, mut missed_max, mut dup, mut ooo, mut in_window, mut bad) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for s in &subs {
        let mut missed = 0;
        for (i, &a) in acked.iter().enumerate() {
            missed += (1..=a).filter(|&q| !s.seen[i].has(q)).count() as u64;
        }
        missed_total += missed;
        missed_max = missed_max.max(missed);
        dup += s.dup;
        ooo += s.ooo;
        in_window += s.delivered_in_window;
        bad += s.bad;
    }
    let expected = published * n as u64;
    let (p50, p99, max) = (
        latency.quantile_us(0.5),
        latency.quantile_us(0.99),
        latency.max_us(),
    );
    let human = format!(
        "sse     {:<16} n={n} p={p} {}s: {:.0} publishes/s, {:.0} events/s, latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms, missed {missed_total} of {expected} (max {missed_max} per stream), duplicated {dup}, out of order {ooo}, streams closed {stream_errors}, publish errors {publish_errors}, unparsable {bad}, cpu: server {cpu:.2} s, client {client_cpu:.2} s",
        o.label,
        window,
        published as f64 / window,
        in_window as f64 / window,
        ms(p50),
        ms(p99),
        ms(max),
    );
    let line = base(o)
        .int("n", n as u64)
        .int("publishers", p as u64)
        .num("duration_s", window)
        .int("published", published)
        .num("publishes_per_s", published as f64 / window)
        .num("deliveries_per_s", in_window as f64 / window)
        .num("latency_p50_ms", ms(p50))
        .num("latency_p99_ms", ms(p99))
        .num("latency_max_ms", ms(max))
        .int("expected", expected)
        .int("missed", missed_total)
        .int("missed_max_per_sub", missed_max)
        .int("duplicated", dup)
        .int("out_of_order", ooo)
        .int("streams_closed", stream_errors)
        .int("publish_errors", publish_errors)
        .int("unparsable", bad)
        .num("server_cpu_s", cpu)
        .num("client_cpu_s", client_cpu);
    Ok(vec![(human, line)])
}

/// Opens `n` event streams (tags 0..n) with `request`, at most 100 not yet answered at a time,
/// and waits for each stream's head. Returns which tags have an open stream and how many failed.
fn open_streams(
    net: &mut Net,
    n: usize,
    request: &[u8],
    deadline: Instant,
    readers: &mut [EventReader],
) -> Result<(Vec<bool>, usize), String> {
    let mut open = vec![false; n];
    let mut next = 0;
    let mut pending = 0usize;
    let (mut done, mut failed) = (0usize, 0usize);
    let mut first_error: Option<String> = None;
    let mut evs = Vec::new();
    while done + failed < n {
        while next < n && pending < 100 {
            match net.connect_raw(next) {
                Ok(id) => {
                    net.send(id, request, &mut evs);
                    pending += 1;
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("connect: {e}"));
                }
            }
            next += 1;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out opening streams: {done} open, {failed} failed of {n}"
            ));
        }
        net.turn(Duration::from_millis(50), &mut evs);
        for ev in evs.drain(..) {
            match ev {
                Ev::Bytes(t, bytes, _) if t < n => {
                    readers[t].push(&bytes, &mut Vec::new())?;
                    if readers[t].head_done && !open[t] {
                        open[t] = true;
                        done += 1;
                        pending -= 1;
                    }
                }
                Ev::Closed(t, why) if t < n => {
                    if open[t] {
                        open[t] = false;
                        done -= 1;
                    } else {
                        pending -= 1;
                    }
                    failed += 1;
                    first_error.get_or_insert(why);
                }
                _ => {}
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("parlor-load: {failed} of {n} streams failed; first error: {e}");
    }
    Ok((open, failed))
}

fn events_request(o: &Opts, room: &str) -> Vec<u8> {
    format!(
        "GET /events?room={room} HTTP/1.1\r\nHost: {}\r\n\r\n",
        host(o)
    )
    .into_bytes()
}

/// `sse-idle`: like `idle`, with N open event streams instead of N held polls.
fn sse_idle(o: &Opts) -> Results {
    let n = o.n.unwrap_or(1000);
    let limit = raise_nofile_limit();
    if n as u64 + 32 > limit {
        return Err(format!(
            "-n {n} needs more file descriptors than the limit {limit} allows"
        ));
    }
    let mut net = new_net(o, n)?;
    let mut readers: Vec<EventReader> = (0..n).map(|_| EventReader::default()).collect();
    let rss0 = server_rss(o);
    let cpu0 = CpuMark::now(o);
    let start = Instant::now();
    let req = events_request(o, &o.room);
    let (mut open, failed) = open_streams(&mut net, n, &req, start + o.timeout, &mut readers)?;
    let open_time = start.elapsed();
    let mut closed = 0usize;
    let mut unexpected = 0usize;
    let mut watch = |ev: &Ev| match ev {
        Ev::Closed(t, _) if *t < n && open[*t] => {
            open[*t] = false;
            closed += 1;
        }
        Ev::Bytes(t, bytes, _) if *t < n => {
            let mut texts = Vec::new();
            if readers[*t].push(bytes, &mut texts).is_err() || !texts.is_empty() {
                unexpected += 1;
            }
        }
        _ => {}
    };
    run_for(&mut net, default_settle(o, n), &mut watch);
    let mut rss1 = server_rss(o);
    if !o.pids.is_empty() {
        let mut stable = 0;
        for _ in 0..50 {
            run_for(&mut net, Duration::from_millis(100), &mut watch);
            let r = server_rss(o);
            if r == rss1 {
                stable += 1;
                if stable >= 3 {
                    break;
                }
            } else {
                stable = 0;
                rss1 = r;
            }
        }
    }
    let (cpu, client_cpu) = cpu0.since(o);
    let held = open.iter().filter(|x| **x).count();
    net.close_all();
    run_for(&mut net, Duration::from_millis(1000), |_| {});
    let rss2 = server_rss(o);
    let per_stream = match (rss0, rss1) {
        (Some(a), Some(b)) if held > 0 => Some((b.saturating_sub(a) * 1024) as f64 / held as f64),
        _ => None,
    };
    let human = format!(
        "sse-idle {:<15} n={n}: open {held}, {} B per open stream (RSS {} -> {} KiB, {} KiB after close), opened in {:.2} s, failed {failed}, closed by server {closed}, unexpected events {unexpected}, cpu: server {cpu:.2} s, client {client_cpu:.2} s",
        o.label,
        per_stream.map(|b| format!("{b:.0}")).unwrap_or("?".into()),
        rss0.map(|v| v.to_string()).unwrap_or("?".into()),
        rss1.map(|v| v.to_string()).unwrap_or("?".into()),
        rss2.map(|v| v.to_string()).unwrap_or("?".into()),
        open_time.as_secs_f64(),
    );
    let line = base(o)
        .int("n", n as u64)
        .int("held", held as u64)
        .int("failed", failed as u64)
        .int("closed_by_server", closed as u64)
        .int("unexpected", unexpected as u64)
        .opt_int("rss_before_kib", rss0)
        .opt_int("rss_held_kib", rss1)
        .opt_int("rss_after_close_kib", rss2)
        .num("bytes_per_stream", per_stream.unwrap_or(f64::NAN))
        .num("open_s", open_time.as_secs_f64())
        .num("server_cpu_s", cpu)
        .num("client_cpu_s", client_cpu);
    Ok(vec![(human, line)])
}

/// `sse-fanout`: like `fanout`, with N open event streams instead of N held polls: one
/// `POST /publish` per round, the time until each stream has read that message's event.
fn sse_fanout(o: &Opts) -> Results {
    let n = o.n.unwrap_or(1000);
    let limit = raise_nofile_limit();
    if n as u64 + 32 > limit {
        return Err(format!(
            "-n {n} needs more file descriptors than the limit {limit} allows"
        ));
    }
    let mut net = new_net(o, n)?;
    let mut readers: Vec<EventReader> = (0..n).map(|_| EventReader::default()).collect();
    let req = events_request(o, &o.room);
    let (mut open, _) = open_streams(&mut net, n, &req, Instant::now() + o.timeout, &mut readers)?;
    let cpu0 = CpuMark::now(o);
    let mut evs = Vec::new();
    let pub_id = net.connect(n).map_err(|e| format!("publisher: {e}"))?;
    // Let the last heads and the publisher's connect settle.
    run_for(&mut net, default_settle(o, n), |ev| {
        if let Ev::Closed(t, _) = ev {
            if *t < n {
                open[*t] = false;
            }
        }
    });
    let mut all = Samples::new();
    let (mut lasts, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    let (mut lost_total, mut errors) = (0usize, 0usize);
    let mut fewest_open = n;
    let body_pad = "x".repeat(o.msg_bytes.saturating_sub(16));
    let mut texts = Vec::new();
    for round in 0..o.rounds {
        let mut waiting = open.clone();
        let expected = waiting.iter().filter(|w| **w).count();
        fewest_open = fewest_open.min(expected);
        let body = format!("fanout {round:04} {body_pad}");
        let t0 = Instant::now();
        net.send(pub_id, &publish_request(o, &o.room, &body), &mut evs);
        let (mut got, mut publish_ok) = (0usize, false);
        let mut round_samples = Samples::new();
        let mut last = Duration::ZERO;
        let deadline = t0 + o.timeout;
        while (got < expected || !publish_ok) && Instant::now() < deadline {
            net.turn(Duration::from_millis(50), &mut evs);
            for ev in evs.drain(..) {
                match ev {
                    Ev::Bytes(t, bytes, at) if t < n => {
                        texts.clear();
                        if readers[t].push(&bytes, &mut texts).is_err() {
                            errors += 1;
                            continue;
                        }
                        for text in &texts {
                            if waiting[t] && *text == body {
                                waiting[t] = false;
                                let d = at.duration_since(t0);
                                round_samples.push(d);
                                all.push(d);
                                last = last.max(d);
                                got += 1;
                            } else {
                                errors += 1;
                            }
                        }
                    }
                    Ev::Response(_, r, _) => {
                        publish_ok = true;
                        if r.status != 200 {
                            return Err(format!("publish answered {}", r.status));
                        }
                    }
                    Ev::Closed(t, why) => {
                        if t == n {
                            return Err(format!("publisher connection closed: {why}"));
                        }
                        open[t] = false;
                        waiting[t] = false;
                    }
                    _ => {}
                }
            }
        }
        lost_total += expected.saturating_sub(got);
        lasts.push(last.as_micros() as f64);
        p50s.push(round_samples.quantile_us(0.5) as f64);
        p99s.push(round_samples.quantile_us(0.99) as f64);
    }
    let (cpu, client_cpu) = cpu0.since(o);
    net.close_all();
    let last_min = lasts.iter().cloned().fold(f64::INFINITY, f64::min);
    let last_max = lasts.iter().cloned().fold(0.0, f64::max);
    let last_med = median(&mut lasts);
    let p50 = median(&mut p50s);
    let p99 = median(&mut p99s);
    let human = format!(
        "sse-fanout {:<13} n={n} rounds={}: last {:.2} ms (min {:.2}, max {:.2}), p50 {:.2} ms, p99 {:.2} ms, lost {lost_total}, errors {errors}, fewest open {fewest_open}, cpu: server {cpu:.2} s, client {client_cpu:.2} s",
        o.label,
        o.rounds,
        last_med / 1000.0,
        last_min / 1000.0,
        last_max / 1000.0,
        p50 / 1000.0,
        p99 / 1000.0,
    );
    let line = base(o)
        .int("n", n as u64)
        .int("rounds", o.rounds as u64)
        .num("last_us", last_med)
        .num("last_min_us", last_min)
        .num("last_max_us", last_max)
        .num("p50_us", p50)
        .num("p99_us", p99)
        .num("all_p99_us", all.quantile_us(0.99) as f64)
        .int("lost", lost_total as u64)
        .int("held_min", fewest_open as u64)
        .int("errors", errors as u64)
        .num("server_cpu_s", cpu)
        .num("client_cpu_s", client_cpu);
    Ok(vec![(human, line)])
}

// ---------------------------------------------------------------------------------------------

fn http(o: &Opts) -> Results {
    let c = o.connections;
    raise_nofile_limit();
    let mut net = new_net(o, c)?;
    let req = if o.request == "get" {
        format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", host(o)).into_bytes()
    } else {
        publish_request(o, &format!("{}-http", o.room), "hello from parlor-load")
    };
    let mut ids: Vec<Option<usize>> = vec![None; c];
    let mut sent_at = vec![Instant::now(); c];
    let mut evs = Vec::new();
    // Connect everything first, then start all request loops together.
    let deadline = Instant::now() + o.timeout;
    let mut connected = 0;
    for (t, slot) in ids.iter_mut().enumerate() {
        *slot = Some(net.connect(t).map_err(|e| format!("connect: {e}"))?);
    }
    while connected < c {
        if Instant::now() > deadline {
            return Err(format!("only {connected} of {c} connections opened"));
        }
        net.turn(Duration::from_millis(50), &mut evs);
        for ev in evs.drain(..) {
            match ev {
                Ev::Connected(_) => connected += 1,
                Ev::Closed(_, why) => return Err(format!("connect: {why}")),
                _ => {}
            }
        }
    }
    let cpu0 = CpuMark::now(o);
    let start = Instant::now();
    let end = start + o.duration;
    for t in 0..c {
        sent_at[t] = Instant::now();
        if let Some(id) = ids[t] {
            net.send(id, &req, &mut evs);
        }
    }
    let mut lat = Samples::new();
    let mut ok = 0u64;
    let mut non2xx = 0u64;
    let mut closed = 0u64;
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    let mut active = c;
    while active > 0 {
        let now = Instant::now();
        if now > end + o.timeout {
            break;
        }
        net.turn(Duration::from_millis(20), &mut evs);
        let mut again = Vec::new();
        for ev in evs.drain(..) {
            match ev {
                Ev::Response(t, r, at) => {
                    if at <= end {
                        lat.push(at.duration_since(sent_at[t]));
                        *statuses.entry(r.status).or_default() += 1;
                        if (200..300).contains(&r.status) {
                            ok += 1;
                        } else {
                            non2xx += 1;
                        }
                    }
                    if at < end {
                        again.push(t);
                    } else {
                        active -= 1;
                    }
                }
                Ev::Closed(t, _) => {
                    closed += 1;
                    if closed > 100_000 {
                        return Err("too many closed connections".into());
                    }
                    ids[t] = None;
                    if Instant::now() < end {
                        if let Ok(id) = net.connect(t) {
                            ids[t] = Some(id);
                            again.push(t);
                        } else {
                            active -= 1;
                        }
                    } else {
                        active -= 1;
                    }
                }
                _ => {}
            }
        }
        for t in again {
            if let Some(id) = ids[t] {
                sent_at[t] = Instant::now();
                net.send(id, &req, &mut evs);
            }
        }
    }
    let elapsed = o.duration.as_secs_f64();
    let (cpu, client_cpu) = cpu0.since(o);
    net.close_all();
    let rps = ok as f64 / elapsed;
    let what = if o.request == "get" {
        "GET /"
    } else {
        "POST /publish"
    };
    let human = format!(
        "http    {:<16} {what} c={c} {}s: {rps:.0} requests/s, p50 {:.3} ms, p99 {:.3} ms, non-2xx {non2xx}, reconnects {closed}, cpu: server {cpu:.2} s, client {client_cpu:.2} s",
        o.label,
        elapsed,
        ms(lat.quantile_us(0.5)),
        ms(lat.quantile_us(0.99)),
    );
    let line = base(o)
        .str("request", &o.request)
        .int("connections", c as u64)
        .num("duration_s", elapsed)
        .num("requests_per_s", rps)
        .int("ok", ok)
        .int("non_2xx", non2xx)
        .int("reconnects", closed)
        .int("p50_us", lat.quantile_us(0.5))
        .int("p99_us", lat.quantile_us(0.99))
        .num("server_cpu_s", cpu)
        .num("client_cpu_s", client_cpu);
    Ok(vec![(human, line)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunked stream's head, a `ready` event, a comment and three message events (one of
    /// two data lines), read in pieces of every size: the same texts come out in order.
    #[test]
    fn event_reader_splits_chunks_and_events_at_any_read_boundary() {
        let mut stream = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for event in [
            &b"retry: 3000\nevent: ready\ndata: ep-0\n\n"[..],
            b": keepalive\n\n",
            b"id: ep-1\ndata: p0 00000001 x\n\n",
            b"id: ep-2\ndata: two\ndata: lines\n\nid: ep-3\ndata: p1 00000002\n\n",
        ] {
            stream.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
            stream.extend_from_slice(event);
            stream.extend_from_slice(b"\r\n");
        }
        for piece in 1..=stream.len() {
            let mut reader = EventReader::default();
            let mut texts = Vec::new();
            for part in stream.chunks(piece) {
                reader.push(part, &mut texts).unwrap();
            }
            assert_eq!(
                texts,
                ["p0 00000001 x", "two\nlines", "p1 00000002"],
                "pieces of {piece}"
            );
            assert!(reader.buf.is_empty() && reader.body.is_empty());
        }
        let mut reader = EventReader::default();
        let err = reader.push(b"HTTP/1.1 404 Not Found\r\n\r\n", &mut Vec::new());
        assert!(err.is_err());
    }

    /// The long-poll run reads a batch's texts, `next` and `gap`, whatever else it holds.
    #[test]
    fn batch_read_takes_texts_next_and_gap() {
        let body = br#"{"messages":[{"cursor":"e-1","time":1,"text":"p0 00000001 \"x\""},{"text":"p1 2","cursor":"e-2"}],"next":"e-2","gap":3,"reset":false}"#;
        let b: BatchRead = serde_json::from_slice(body).unwrap();
        assert_eq!(b.texts, ["p0 00000001 \"x\"", "p1 2"]);
        assert_eq!((b.next.as_deref(), b.gap), (Some("e-2"), 3.0));
        let b: BatchRead = serde_json::from_slice(br#"{"messages":[],"next":"e-0"}"#).unwrap();
        assert!(b.texts.is_empty() && b.gap == 0.0);
        assert!(serde_json::from_slice::<BatchRead>(b"[1]").is_err());
    }

    /// The SSE run reads texts from bytes: the same answers as the long-poll run's parser.
    #[test]
    fn message_texts_parse_the_same_from_bytes() {
        for text in [
            "p0 00000001 xxxx",
            "p3 00000042",
            "p12 7 x y",
            "q0 1",
            "p0",
            "p 1",
            "px 1",
            "",
        ] {
            assert_eq!(
                parse_text_bytes(text.as_bytes()),
                parse_text(text),
                "{text:?}"
            );
        }
    }
}
