#!/usr/bin/env python3
"""Turns bench/results/latest.jsonl (written by parlor-load --json) into:

* bench/results/fanout.svg: fan-out time (last delivery, and median delivery dashed) against the
  number of held polls, one colour per server;
* bench/results/table.md: a markdown table of every figure per server, with the ratio to the
  baseline (parlor-baseline), printed to stdout too.

Python 3 standard library only.  Usage: bench/chart.py [RESULTS.jsonl] [--main-n N]
"""

import json
import math
import os
import sys
from collections import defaultdict

COLOURS = ["#444444", "#d9480f", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f08c00"]
BASELINE = "parlor-baseline"


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


# The long-polling measurement each SSE mode is compared with, and its field's name there.
POLL_TWIN = {"sse-idle": "idle", "sse-fanout": "fanout"}
POLL_FIELD = {"bytes_per_stream": "bytes_per_poll"}

KEYS = ("server", "mode", "n", "cursor", "request", "publishers", "connections", "duration_s")


def merge_runs(rows):
    """Results of the same measurement from several runs (run.sh --runs K) become one record
    holding the median of each numeric field, plus "runs" (how many) and, for the figures that
    judge the targets, their range across runs in "<field>_range"."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in KEYS), []).append(r)
    merged = []
    for group in groups.values():
        out = dict(group[-1])
        out["runs"] = len(group)
        for field, value in group[-1].items():
            if field in KEYS or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            values = sorted(
                g[field] for g in group if isinstance(g.get(field), (int, float)) and not math.isnan(g[field])
            )
            if not values:
                continue
            mid = len(values) // 2
            med = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
            out[field] = med
            out[field + "_range"] = (values[0], values[-1])
        merged.append(out)
    return merged


def servers_of(rows):
    names = []
    for r in rows:
        if r["server"] not in names:
            names.append(r["server"])
    # Baseline first, then the others in order of appearance.
    return sorted(names, key=lambda s: (s != BASELINE, names.index(s)))


def nice_ceiling(v):
    if v <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * mag >= v:
            return m * mag
    return 10 * mag


def fanout_svg(rows, names):
    data = defaultdict(list)  # server -> [(n, last_ms, p50_ms)]
    for r in rows:
        if r["mode"] == "fanout" and r.get("last_us") is not None:
            data[r["server"]].append((r["n"], r["last_us"] / 1000.0, r["p50_us"] / 1000.0))
    if not data:
        return None
    w, h = 720, 440
    left, right, top, bottom = 70, 190, 40, 60
    pw, ph = w - left - right, h - top - bottom
    max_n = max(n for pts in data.values() for n, _, _ in pts)
    max_ms = nice_ceiling(max(ms for pts in data.values() for _, ms, _ in pts))
    x_max = nice_ceiling(max_n)

    def x(n):
        return left + pw * n / x_max

    def y(ms):
        return top + ph - ph * ms / max_ms

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="bold">'
        "Fan-out: one publish to N held polls, time until delivered</text>",
    ]
    for i in range(6):
        v = max_ms * i / 5
        yy = y(v)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#e9ecef"/>')
        out.append(f'<text x="{left - 8}" y="{yy + 4:.1f}" text-anchor="end">{v:g}</text>')
    for i in range(6):
        v = x_max * i / 5
        xx = x(v)
        out.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + ph}" stroke="#e9ecef"/>')
        out.append(f'<text x="{xx:.1f}" y="{top + ph + 18}" text-anchor="middle">{int(v):,}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#868e96"/>')
    out.append(
        f'<text x="{left + pw / 2}" y="{h - 18}" text-anchor="middle">held polls (N)</text>'
    )
    out.append(
        f'<text transform="translate(18 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
        "milliseconds after the publish</text>"
    )
    ly = top + 10
    for i, name in enumerate(names):
        pts = sorted(data.get(name, []))
        if not pts:
            continue
        c = COLOURS[i % len(COLOURS)]
        last = " ".join(f"{x(n):.1f},{y(ms):.1f}" for n, ms, _ in pts)
        med = " ".join(f"{x(n):.1f},{y(p):.1f}" for n, _, p in pts)
        out.append(f'<polyline points="{last}" fill="none" stroke="{c}" stroke-width="2.5"/>')
        out.append(
            f'<polyline points="{med}" fill="none" stroke="{c}" stroke-width="1.5" '
            'stroke-dasharray="5 4"/>'
        )
        for n, ms, _ in pts:
            out.append(f'<circle cx="{x(n):.1f}" cy="{y(ms):.1f}" r="3.5" fill="{c}"/>')
        lx = left + pw + 16
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{c}" stroke-width="2.5"/>')
        out.append(f'<text x="{lx + 30}" y="{ly + 4}">{name}</text>')
        ly += 20
    lx = left + pw + 16
    ly += 10
    out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="#000" stroke-width="2.5"/>')
    out.append(f'<text x="{lx + 30}" y="{ly + 4}">last delivery</text>')
    ly += 20
    out.append(
        f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="#000" stroke-width="1.5" '
        'stroke-dasharray="5 4"/>'
    )
    out.append(f'<text x="{lx + 30}" y="{ly + 4}">median delivery</text>')
    out.append(
        f'<text x="{lx}" y="{ly + 30}" font-size="10" fill="#666">median of the rounds</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def fmt(v, unit=""):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        if abs(v) >= 100:
            s = f"{v:,.0f}"
        elif abs(v) >= 10:
            s = f"{v:.1f}"
        else:
            s = f"{v:.2f}"
    else:
        s = f"{v:,}"
    return s + unit


def table(rows, names, main_n):
    def find(server, mode, **kw):
        hits = [
            r
            for r in rows
            if r["server"] == server
            and r["mode"] == mode
            and all(r.get(k) == v for k, v in kw.items())
        ]
        return hits[-1] if hits else None

    # (label, mode, filter, field, scale, unit, better: "low"/"high"/None)
    metrics = [
        ("idle: server RSS per held poll", "idle", {}, "bytes_per_poll", 1, " B", "low"),
        ("idle: held polls", "idle", {}, "held", None, "", None),
        (f"fan-out N={main_n}: last delivery (median of rounds)", "fanout", {"n": main_n}, "last_us", 1e-3, " ms", "low"),
        (f"fan-out N={main_n}: last delivery, best round", "fanout", {"n": main_n}, "last_min_us", 1e-3, " ms", "low"),
        (f"fan-out N={main_n}: median delivery", "fanout", {"n": main_n}, "p50_us", 1e-3, " ms", "low"),
        (f"fan-out N={main_n}: p99 delivery", "fanout", {"n": main_n}, "p99_us", 1e-3, " ms", "low"),
        (f"fan-out N={main_n}: lost deliveries", "fanout", {"n": main_n}, "lost", None, "", None),
        (f"fan-out N={main_n}: server CPU", "fanout", {"n": main_n}, "server_cpu_s", 1, " s", "low"),
        ("stream, cursors (JSON): deliveries/s", "stream", {"cursor": "json"}, "deliveries_per_s", 1, "", "high"),
        ("stream, cursors (JSON): publishes/s", "stream", {"cursor": "json"}, "publishes_per_s", 1, "", "high"),
        ("stream, cursors (JSON): missed", "stream", {"cursor": "json"}, "missed", None, "", None),
        ("stream, cursors (JSON): duplicated / out of order", "stream", {"cursor": "json"}, ("duplicated", "out_of_order"), None, "", None),
        ("stream, no cursor: deliveries/s", "stream", {"cursor": "none"}, "deliveries_per_s", 1, "", "high"),
        ("stream, no cursor: publishes/s", "stream", {"cursor": "none"}, "publishes_per_s", 1, "", "high"),
        ("stream, no cursor: missed (of expected)", "stream", {"cursor": "none"}, ("missed", "expected"), None, "", None),
        ("stream over SSE: deliveries/s", "sse", {}, "deliveries_per_s", 1, "", "high"),
        ("stream over SSE: publishes/s", "sse", {}, "publishes_per_s", 1, "", "high"),
        ("stream over SSE: missed (of expected)", "sse", {}, ("missed", "expected"), None, "", None),
        ("stream over SSE: duplicated / out of order", "sse", {}, ("duplicated", "out_of_order"), None, "", None),
        ("stream over SSE: p99 delivery latency", "sse", {}, "latency_p99_ms", 1, " ms", "low"),
        # parlor-baseline has no event streams: its column shows its held polls, for the ratio.
        ("idle over SSE: server RSS per open stream (baseline: per held poll)", "sse-idle", {}, "bytes_per_stream", 1, " B", "low"),
        ("idle over SSE: open streams", "sse-idle", {}, "held", None, "", None),
        (f"fan-out over SSE N={main_n}: last delivery (baseline: held polls)", "sse-fanout", {"n": main_n}, "last_us", 1e-3, " ms", "low"),
        (f"fan-out over SSE N={main_n}: median delivery (baseline: held polls)", "sse-fanout", {"n": main_n}, "p50_us", 1e-3, " ms", "low"),
        (f"fan-out over SSE N={main_n}: lost deliveries", "sse-fanout", {"n": main_n}, "lost", None, "", None),
        (f"fan-out over SSE N={main_n}: server CPU", "sse-fanout", {"n": main_n}, "server_cpu_s", 1, " s", "low"),
        ("http GET /: requests/s", "http", {"request": "get"}, "requests_per_s", 1, "", "high"),
        ("http GET /: p99 latency", "http", {"request": "get"}, "p99_us", 1e-3, " ms", "low"),
        ("http POST /publish: requests/s", "http", {"request": "publish"}, "requests_per_s", 1, "", "high"),
        ("http POST /publish: p99 latency", "http", {"request": "publish"}, "p99_us", 1e-3, " ms", "low"),
    ]
    # Derived, per second of server CPU: steadier than wall-clock rates on a shared machine,
    # where another process may take a core away from the server for part of a run.
    for r in rows:
        cpu = r.get("server_cpu_s")
        if isinstance(cpu, (int, float)) and cpu > 0:
            if r["mode"] == "http":
                r["per_cpu_s"] = r["ok"] / cpu
            elif r["mode"] in ("stream", "sse"):
                r["per_cpu_s"] = r["deliveries_per_s"] * r["duration_s"] / cpu
    extra = [
        ("stream, cursors (JSON): deliveries per server CPU-second", "stream", {"cursor": "json"}, "per_cpu_s", 1, "", "high"),
        ("stream, no cursor: deliveries per server CPU-second", "stream", {"cursor": "none"}, "per_cpu_s", 1, "", "high"),
        ("stream over SSE: deliveries per server CPU-second", "sse", {}, "per_cpu_s", 1, "", "high"),
        ("http GET /: requests per server CPU-second", "http", {"request": "get"}, "per_cpu_s", 1, "", "high"),
        ("http POST /publish: requests per server CPU-second", "http", {"request": "publish"}, "per_cpu_s", 1, "", "high"),
    ]
    for item in extra:
        # After the wall-clock rate of the same measurement.
        prefix = item[0].split(":")[0] + ":"
        at = max(i for i, m in enumerate(metrics) if m[0].startswith(prefix)) + 1
        metrics.insert(at, item)
    head = "| measurement | " + " | ".join(names) + " |"
    sep = "| --- |" + " ---: |" * len(names)
    lines = [head, sep]
    for label, mode, filt, field, scale, unit, better in metrics:
        cells = []
        base_val = None
        any_value = False
        for name in names:
            r = find(name, mode, **filt)
            f = field
            if r is None and name == BASELINE and mode in POLL_TWIN:
                # The same measurement over long-polling, for the ratio of the SSE rows.
                r = find(name, POLL_TWIN[mode], **filt)
                f = POLL_FIELD.get(field, field)
            if r is None:
                cells.append("–")
                continue
            if isinstance(field, tuple):
                a, b = (r.get(f) for f in field)
                sep_ = " of " if field[1] == "expected" else " / "
                cells.append(f"{fmt(a)}{sep_}{fmt(b)}")
                any_value = True
                continue
            v = r.get(f)
            if v is None:
                cells.append("–")
                continue
            any_value = True
            if scale is not None:
                v = float(v) * scale
            cell = fmt(v, unit)
            rng = r.get(f + "_range")
            if rng and r.get("runs", 1) > 1 and rng[0] != rng[1] and scale is not None:
                cell += f" [{fmt(float(rng[0]) * scale)}–{fmt(float(rng[1]) * scale)}]"
            if name == BASELINE:
                base_val = v
            elif better and base_val not in (None, 0) and isinstance(v, float) and not math.isnan(v):
                cell += f" ({v / base_val:.2f}×)"
            cells.append(cell)
        if any_value:
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Ratios in parentheses are to parlor-baseline (lower is better for sizes and times, higher for rates).")
    return "\n".join(lines) + "\n"


def sweep_table(rows, names):
    ns = sorted({r["n"] for r in rows if r["mode"] == "fanout"})
    if not ns:
        return ""
    names = [n for n in names if any(r["mode"] == "fanout" and r["server"] == n for r in rows)]
    lines = ["| N | " + " | ".join(names) + " |", "| ---: |" + " ---: |" * len(names)]
    for n in ns:
        cells = []
        base = None
        for name in names:
            hits = [r for r in rows if r["mode"] == "fanout" and r["server"] == name and r["n"] == n]
            if not hits:
                cells.append("–")
                continue
            v = hits[-1]["last_us"] / 1000.0
            cell = f"{v:.1f} ms"
            if name == BASELINE:
                base = v
            elif base:
                cell += f" ({v / base:.2f}×)"
            cells.append(cell)
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    args = sys.argv[1:]
    main_n = 10000
    if "--main-n" in args:
        i = args.index("--main-n")
        main_n = int(args[i + 1])
        del args[i : i + 2]
    path = args[0] if args else os.path.join(os.path.dirname(__file__), "results", "latest.jsonl")
    rows = load(path)
    if not rows:
        sys.exit(f"{path}: no results")
    runs = max(len([r for r in rows if r["mode"] == "idle" and r["server"] == s]) for s in {r["server"] for r in rows})
    rows = merge_runs(rows)
    names = servers_of(rows)
    outdir = os.path.dirname(path) or "."
    svg = fanout_svg(rows, names)
    if svg:
        with open(os.path.join(outdir, "fanout.svg"), "w", encoding="utf-8") as f:
            f.write(svg)
    md = ""
    if runs > 1:
        md += f"Median of {runs} runs; the range across runs follows each rate and time in brackets.\n\n"
    md += table(rows, names, main_n)
    md += "\nFan-out, last delivery (median of the rounds) by N:\n\n" + sweep_table(rows, names)
    with open(os.path.join(outdir, "table.md"), "w", encoding="utf-8") as f:
        f.write(md)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
