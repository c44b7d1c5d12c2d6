#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/seed-*).

The inputs follow the decoding in fuzz/harness/src/lib.rs: `parse` is one selector byte (its low two
bits pick the limits: 0 default, 1 and 3 tiny, 2 small) then the stream; `split` is a selector
byte, a cuts byte (low four bits: how many cut points follow, two bytes each, little-endian;
high bit: feed byte by byte) then the stream. `machine` is a config byte then operations, as
documented in fuzz/harness/src/machine.rs. Run from anywhere; it rewrites only seed-* files.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

REQUESTS = {
    "get": b"GET /subscribe?room=a HTTP/1.1\r\nHost: x\r\n\r\n",
    "get-since": b"GET /subscribe?room=lobby&since=e-3 HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n",
    "headers": b"POST /publish HTTP/1.1\r\nHost: h:8080\r\nContent-Type: text/plain\r\n"
    b"Accept: text/html\r\naccept: application/json\r\nOrigin: http://h:8080\r\n"
    b"Last-Event-ID: abc-3\r\nX-Other: y\r\nContent-Length: 2\r\n\r\nhi",
    "bare-lf": b"GET / HTTP/1.1\nHost: x\n\n",
    "leading-crlf": b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "cl-repeated": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc",
    "pipeline": b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz"
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nq\r\n0\r\n\r\n"
    b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n",
    "chunked-ext-trailer": b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n6 ; a=\"b\"\r\n world\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n",
    "chunked-hex": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1A\r\n"
    + b"z" * 26 + b"\r\n0\r\n\r\n",
    "chunk-size-bad": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n",
    "chunk-no-crlf": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
    "chunk-huge": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\n",
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    "cl-differ": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "cl-invalid": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
    "te-gzip": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "te-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "h2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "version-12": b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
    "garbage": b"\x00\x01\x02 hello\r\n\r\n",
    "absolute-uri": b"GET http://example.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "host-twice": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /metrics HTTP/1.0\r\n\r\n",
    "big-header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200 + b"\r\n\r\n",
    "long-uri": b"GET /" + b"a" * 60 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "many-headers": b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
    "expect": b"POST /publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
    "expect-teapot": b"POST / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n",
    "close": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, Close\r\n\r\n",
    "options-star": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
    "publish-json": b"POST /publish?room=a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 27\r\n\r\n{\"nick\":\"ann\",\"text\":\"hi\"}\n",
    "publish-form": b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 26\r\n\r\nroom=a&nick=b%20c&text=hi+",
}

# (name, selector) for parse: most with default limits, the cap cases with small ones.
PARSE = [(n, 0) for n in REQUESTS] + [
    ("big-header", 1), ("long-uri", 2), ("many-headers", 1), ("pipeline", 2),
    ("chunked-ext-trailer", 1), ("chunked-hex", 3), ("get", 3),
]

# (name, selector, cuts) for split: cuts is a list of cut points, or "bytes".
SPLIT = [
    ("pipeline", 0, [1, 30, 31, 70, 100, 150]),
    ("pipeline", 0, "bytes"),
    ("chunked-ext-trailer", 0, "bytes"),
    ("chunked-ext-trailer", 1, [60, 61, 62, 75]),
    ("headers", 0, [3, 17, 18, 19, 120]),
    ("leading-crlf", 0, [1, 2, 3]),
    ("big-header", 1, [10, 50, 64, 65]),
    ("long-uri", 1, [5, 20, 40, 80]),
    ("expect", 0, [80, 81, 83]),
    ("http10", 0, "bytes"),
    ("chunk-no-crlf", 0, "bytes"),
    ("bare-lf", 0, [14, 15, 22, 23]),
]


# The machine's operations (fuzz/harness/src/machine.rs). Connections are picked by index among
# the open ones, lowest id first. Templates: 0 subscribe, 1 subscribe JSON (Accept), 2 subscribe
# format=json, 3 subscribe HTTP/1.0 with Last-Event-ID, 4 publish text, 5 publish JSON, 6 publish
# form, 7 chunked publish with Expect, 8 GET /, 9 /metrics, 10 HEAD /healthz, 11 DELETE, 12 CSS,
# 13 event stream (HTTP/1.1, chunked), 14 event stream JSON (HTTP/1.0, Last-Event-ID).
# Room: 0 a, 1 b, 2 none (main), 3 c. Flags: low 3 bits the cursor (2 since=0, 3 epoch-0, 4 ahead,
# 5 other epoch, 6-7 last seen), 0x08 Connection: close, bits 4-5 Origin, bits 6-7 text and id.
def accept(peer=0): return bytes([0, peer])
def raw(conn, data):
    assert len(data) < 128
    return bytes([1, conn, len(data)]) + data
def req(conn, template, room=0, flags=0, split=False):
    return bytes([2, conn, template | (0x80 if split else 0), room, flags])
def eof(conn): return bytes([3, conn])
def flush(conn, amount=255): return bytes([4, conn, amount])
def closed(conn): return bytes([5, conn])
def wait(step=7): return bytes([6, step])
SHUTDOWN = bytes([7])
def stale(which=0, call=0): return bytes([8, which, call])
FINISH = bytes([9])

MACHINE = {
    # A held poll answered by a publish, in each representation.
    "publish-wakes-poll": bytes([0]) + accept() + req(0, 0) + accept(1) + req(1, 4) + flush(0) + flush(1)
    + req(0, 1, 0, 6) + req(1, 5) + req(0, 2, 0, 2) + req(1, 6) + flush(0) + flush(1),
    # History: catch up with since=0, a cursor, another epoch, an ahead cursor; HTTP/1.0 poll.
    "history": bytes([0]) + accept() + req(0, 4) + req(0, 5, 0, 0x40) + req(0, 0, 0, 2) + req(0, 1, 0, 3)
    + req(0, 2, 0, 5) + req(0, 0, 0, 4) + req(0, 3) + flush(0) + wait(),
    # A poll times out (204), then pipelined requests behind a new held poll.
    "timeout-pipeline": bytes([0]) + accept() + req(0, 0, 1) + wait() + req(0, 0, 1) + req(0, 9) + req(0, 8)
    + accept() + req(1, 4, 1) + flush(0) + flush(1) + wait(),
    # Tiny caps: bytes behind a held poll pause reading; the answer resumes it.
    "pause-resume": bytes([1]) + accept() + req(0, 0) + raw(0, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n" * 3)
    + raw(0, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n" * 3) + raw(0, b"GET /")
    + accept() + req(1, 4) + flush(0) + flush(1) + wait(3),
    # Tiny caps: the connection cap, the per-address cap, the room cap, rate limit, message cap.
    "caps": bytes([1]) + accept() + accept() + accept() + accept(1) + accept(2) + FINISH
    + req(0, 4, 0) + req(0, 4, 1) + req(0, 4, 3) + req(0, 4, 0, 0x40) + req(0, 4, 0, 0x80)
    + req(1, 5, 0, 0x80) + flush(0) + flush(1),
    # Tiny caps: the page is larger than the unsent cap: cut off with Abort.
    "unsent-cap": bytes([1]) + accept() + req(0, 8) + req(0, 12) + FINISH + accept() + req(0, 12) + flush(0, 3),
    # Peer errors: garbage, a head that never ends, a request cut by EOF, DELETE, Origin.
    "peer-errors": bytes([1]) + accept() + raw(0, b"\x00\x01 nonsense\r\n\r\n") + FINISH
    + accept() + raw(0, b"GET /subscribe HTTP/1.1\r\nHo") + wait(3) + FINISH
    + accept() + req(0, 11) + req(0, 4, 0, 0x30) + req(0, 4, 0, 0x20) + req(0, 4, 0, 0x10)
    + raw(0, b"POST /publish HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nab") + eof(0),
    # Expect: 100-continue with a chunked body, split in two reads; HEAD; Connection: close.
    "continue-split": bytes([0]) + accept() + req(0, 7, 0, 0, True) + req(0, 10, 8, 0, True) + FINISH
    + accept() + req(0, 9, 0, 0x08) + req(0, 0, 2, 0x08) + req(0, 4, 2, 0, True) + flush(0),
    # EOF while held, closes, and inputs naming closed or unknown connections.
    "eof-stale": bytes([0]) + accept() + req(0, 0) + eof(0) + stale(0, 1) + FINISH + stale(0, 0) + stale(0, 1)
    + stale(0, 2) + stale(0, 3) + accept() + closed(0) + stale(1, 2),
    # Graceful shutdown with a held poll, an idle connection, a half request; then a new one.
    "shutdown": bytes([0]) + accept() + req(0, 0) + accept() + accept() + raw(2, b"GET / HT")
    + SHUTDOWN + accept() + FINISH + wait(4) + wait(),
    # Event streams: live and resumed, both framings, heartbeats, a publish, EOF, shutdown.
    "sse": bytes([0]) + accept() + req(0, 13) + accept() + req(1, 14) + accept(1) + req(2, 13, 0, 0x26)
    + accept(2) + req(3, 4) + flush(3) + wait(2) + wait() + req(3, 5, 0, 0x40) + eof(1) + wait()
    + req(3, 13, 0, 5) + flush(3) + SHUTDOWN + FINISH + wait(),
    # Tiny caps: a stream's maximum age, heartbeats, and a slow stream cut off by the unsent cap.
    "sse-tiny": bytes([1]) + accept() + req(0, 13) + accept() + req(1, 14, 1) + accept(1) + req(2, 4)
    + req(2, 4) + wait(1) + wait() + flush(0) + req(2, 4, 0, 0x40) + wait() + wait() + FINISH
    + accept() + req(2, 13, 0, 2) + raw(2, b"GET / HTTP/1.1\r\n\r\n") + req(2, 8) + eof(2),
    # Idle and head timeouts, time steps.
    "timers": bytes([1]) + accept() + wait(0) + wait(1) + wait(2) + accept() + req(1, 8) + wait(3)
    + wait(5) + FINISH + wait(6) + wait(),
}


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    assert len(data) < 4096, name
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def main():
    for target in ("parse", "split", "machine"):
        d = os.path.join(HERE, "corpus", target)
        for f in os.listdir(d) if os.path.isdir(d) else []:
            if f.startswith("seed-"):
                os.remove(os.path.join(d, f))
    for name, sel in PARSE:
        write("parse", f"{name}-{sel}", bytes([sel]) + REQUESTS[name])
    for name, sel, cuts in SPLIT:
        stream = REQUESTS[name]
        if cuts == "bytes":
            data = bytes([sel, 0x80]) + stream
            tag = "bytes"
        else:
            data = bytes([sel, len(cuts)]) + b"".join(struct.pack("<H", c) for c in cuts) + stream
            tag = "cuts"
        write("split", f"{name}-{sel}-{tag}", data)
    for name, data in MACHINE.items():
        write("machine", name, data)


if __name__ == "__main__":
    main()
