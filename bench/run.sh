#!/usr/bin/env bash
# Runs every benchmark mode of parlor-load against parlor-baseline, parlor-mio and parlor-smol
# (whichever build) in one run, on loopback, each server started fresh for each group of
# measurements, servers interleaved mode by mode so that background load hits them alike.
#
#   bench/run.sh            the full run (about 6 minutes with three servers)
#   bench/run.sh --quick    small N and short durations, to check the tools (under a minute)
#   bench/run.sh --runs 3   everything three times (interleaved); chart.py reports the median
#
# Writes bench/results/latest.jsonl (one JSON object per result), then bench/results/fanout.svg
# and bench/results/table.md through bench/chart.py. Linux only (/proc, RLIMIT_NOFILE).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
RUNS=1
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        --runs) RUNS=$2; shift ;;
        *) echo "usage: bench/run.sh [--quick] [--runs K]" >&2; exit 2 ;;
    esac
    shift
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$CARGO_TARGET_DIR/release"
RESULTS=bench/results
((QUICK)) && RESULTS=bench/results/quick # never overwrite the committed results with a check
OUT="$RESULTS/latest.jsonl"
LOGDIR="$(mktemp -d)"
mkdir -p "$RESULTS"

packages=(-p parlor-bench)
for pkg in parlor-mio parlor-smol; do
    if cargo metadata --no-deps --format-version 1 2>/dev/null | grep -q "\"name\":\"$pkg\""; then
        packages+=(-p "$pkg")
    fi
done
if [[ -z "${BENCH_NO_BUILD:-}" ]]; then # BENCH_NO_BUILD=1: use the binaries already built
    echo "building ${packages[*]} (release) ..." >&2
    cargo build --release "${packages[@]}" >&2
fi

servers=(baseline)
for s in mio smol; do
    [[ -x "$BIN/parlor-$s" ]] && servers+=("$s")
done
echo "servers: ${servers[*]}" >&2

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)

if ((QUICK)); then
    IDLE_N=2000; FANOUT_NS=(500 1000 2000); FANOUT_MAIN=2000; ROUNDS=3
    STREAM_N=20; STREAM_T=2; HTTP_T=2
else
    # Held polls: the load generator and the server each need one file per connection, and a
    # process here cannot open more than the hard limit (20,000 on the reference machine).
    IDLE_N=$((FD_LIMIT - 1000)); ((IDLE_N > 19000)) && IDLE_N=19000
    FANOUT_NS=(1000 2000 5000 10000); FANOUT_MAIN=10000; ROUNDS=11
    STREAM_N=100; STREAM_T=10; HTTP_T=10
fi
MAX_CONN=$((FD_LIMIT - 100))

# On a shared machine, run the servers and the load generator ahead of other work (a fuzzer,
# a compiler) when allowed to: BENCH_NICE=-10 by default, BENCH_NICE=0 to leave priorities alone.
NICE=(nice -n "${BENCH_NICE:--10}")
if ! "${NICE[@]}" true 2>/dev/null; then NICE=(); fi

: > "$OUT"
SERVER_PID=""
SERVER_URL=""

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_server() { # name
    local name=$1 port log
    port=$(free_port)
    STARTS=$((${STARTS:-0} + 1))
    # A new file per start: the previous start's "listening on" line must not be mistaken for
    # this one's.
    log="$LOGDIR/$name.$STARTS.log"
    : >"$log"
    local args=(--listen "127.0.0.1:$port")
    if [[ $name != baseline ]]; then
        # High enough for every mode; the long poll timeout keeps held polls from turning into
        # 204s during a measurement.
        args+=(--max-connections "$MAX_CONN" --poll-timeout 120s)
    fi
    "${NICE[@]}" "$BIN/parlor-$name" "${args[@]}" >"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if grep -q "listening on http://" "$log"; then
            SERVER_URL="http://127.0.0.1:$port"
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "parlor-$name did not start:" >&2
    cat "$log" >&2
    return 1
}

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap 'stop_server; rm -rf "$LOGDIR"' EXIT

load() { # name, mode args...
    local name=$1
    shift
    "${NICE[@]}" "$BIN/parlor-load" "$@" --url "$SERVER_URL" --pid "$SERVER_PID" --label "parlor-$name" \
        --json "$OUT" || echo "parlor-load $* failed against parlor-$name" >&2
    sleep 1 # let the sockets of this measurement go before the next
}

# nginx as an outside reference for plain requests, when installed (apt-get install nginx-light):
# one worker process like the single-threaded servers, the same index.html at /, and
# POST /publish answered 200 after reading the body.
start_nginx() {
    local port dir
    port=$(free_port)
    dir="$LOGDIR/nginx"
    mkdir -p "$dir/html"
    cp core/assets/index.html "$dir/html/index.html"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $dir/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 10000000;
    server {
        listen 127.0.0.1:$port;
        root $dir/html;
        default_type text/html;
        location = / { try_files /index.html =404; }
        location = /publish { client_body_in_single_buffer on; return 200 "ok\n"; }
    }
}
EOF
    "${NICE[@]}" nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/out.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 50); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
            SERVER_URL="http://127.0.0.1:$port"
            return 0
        fi
        sleep 0.1
    done
    echo "nginx did not start:" >&2
    cat "$dir/out.log" "$dir/error.log" >&2 || true
    return 1
}

for run in $(seq "$RUNS"); do
    echo "run $run of $RUNS" >&2

    for s in "${servers[@]}"; do
        start_server "$s"
        load "$s" idle -n "$IDLE_N"
        stop_server
        if [[ $s != baseline ]]; then
            # The same number of open event streams, on a fresh server (RSS from the same start).
            start_server "$s"
            load "$s" sse-idle -n "$IDLE_N"
            stop_server
        fi
    done

    for s in "${servers[@]}"; do
        start_server "$s"
        for n in "${FANOUT_NS[@]}"; do
            rounds=$ROUNDS
            # The figure the fan-out target is judged on gets the most rounds.
            [[ $n == "$FANOUT_MAIN" ]] && rounds=$((ROUNDS * 2 - 1))
            load "$s" fanout -n "$n" --rounds "$rounds" --room "fanout$n"
            # The same fan-out to open event streams (a room of their own).
            if [[ $s != baseline ]]; then
                load "$s" sse-fanout -n "$n" --rounds "$rounds" --room "ssefanout$n"
            fi
        done
        stop_server
    done

    for s in "${servers[@]}"; do
        start_server "$s"
        if [[ $s == baseline ]]; then
            load "$s" stream -n "$STREAM_N" --publishers 4 --duration "$STREAM_T" --cursor none
        else
            load "$s" stream -n "$STREAM_N" --publishers 4 --duration "$STREAM_T" --cursor json
            load "$s" stream -n "$STREAM_N" --publishers 4 --duration "$STREAM_T" --cursor none
            # The same subscribers and publishers over Server-Sent Events streams.
            load "$s" sse -n "$STREAM_N" --publishers 4 --duration "$STREAM_T"
        fi
        stop_server
    done

    for req in get publish; do
        for s in "${servers[@]}"; do
            start_server "$s"
            load "$s" http --request "$req" --connections 50 --duration "$HTTP_T"
            stop_server
        done
        if command -v nginx >/dev/null && [[ -z "${BENCH_NO_NGINX:-}" ]]; then
            if start_nginx; then
                "${NICE[@]}" "$BIN/parlor-load" http --request "$req" --connections 50 --duration "$HTTP_T" \
                    --url "$SERVER_URL" --pid "$SERVER_PID" --label nginx --json "$OUT" ||
                    echo "parlor-load http against nginx failed" >&2
                stop_server
                sleep 1
            fi
        fi
    done
done

echo "results: $OUT" >&2
python3 bench/chart.py "$OUT" --main-n "$FANOUT_MAIN"
