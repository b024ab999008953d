"""Draws the results of `bench/compare.py` and writes them into BENCHMARKS.md.

Takes, for each system, each workload from the latest full (not `--short`) run that measured
it in OUT/results.jsonl, draws them side by side into OUT/compare.svg, and replaces the part of
BENCHMARKS.md between the `<!-- compare:begin -->` and `<!-- compare:end -->` markers with a
table of the same numbers and the machine they were measured on.
"""

import json
import os

BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"
SYSTEMS = [("etcd", "etcd"), ("zookeeper", "ZooKeeper"), ("lockfs", "lockfs")]

# (title, unit, lower is better, [(system, workload, field)]); lockfs's CLI-protocol numbers
# are their own column, "lockfs (CLI)".
ROWS = [
    ("sequential write p50", "ms", True, "write", "p50_ms", "write_cli"),
    ("sequential write p99", "ms", True, "write", "p99_ms", "write_cli"),
    ("create p50 (a new key or file)", "ms", True, "create", "p50_ms", None),
    ("create p99 (a new key or file)", "ms", True, "create", "p99_ms", None),
    ("linearizable read p50", "ms", True, "read", "p50_ms", None),
    ("lock acquire+release p50 (uncontended)", "ms", True, "lock", "p50_ms", None),
    ("lock acquire+release p99 (uncontended)", "ms", True, "lock", "p99_ms", None),
    ("contended hand-offs/s, 4 contenders", "/s", False, "contended_4", "handoffs_per_s", None),
    ("contended hand-offs/s, 32 contenders", "/s", False, "contended_32", "handoffs_per_s",
     None),
    ("writes/s, 64 concurrent writers", "/s", False, "writes_64", "writes_per_s",
     "writes_64_cli"),
    ("holder process kill -9 → next holder", "ms", True, "holder_crash_process", "ms", None),
    ("holder host/session kill -9 → next holder", "ms", True, "holder_crash_host", "ms", None),
    ("leader kill -9 → next write, p50", "ms", True, "failover", "p50_ms", None),
    ("leader kill -9 → next write, max", "ms", True, "failover", "max_ms", None),
]


def latest(path):
    """{system: {workload: line}}: each workload of each system from the latest full run
    that measured it (a run with `--only` measures some)."""
    by_system = {}
    with open(path) as f:
        for raw in f:
            line = json.loads(raw)
            if line.get("short"):
                continue
            mine = by_system.setdefault(line["system"], {})
            known = mine.get(line["workload"])
            if known is None or line["run"] >= known["run"]:
                mine[line["workload"]] = line
    return by_system


def value(results, system, workload, field):
    line = results.get(system, {}).get(workload)
    if line is None:
        return None
    v = line.get(field)
    if v is None and field == "writes_per_s":
        v = line.get("ops_per_s")  # `lockfs bench write` names it so
    return v


def columns(results):
    cols = [(s, label, None) for s, label in SYSTEMS if s in results]
    if "lockfs" in results:
        cols.append(("lockfs", "lockfs (CLI protocol)", "cli"))
    return cols


def cell(results, col, row):
    system, _, kind = col
    _, _, _, workload, field, cli = row
    if kind == "cli":
        if cli is None:
            return None
        return value(results, system, cli, field)
    return value(results, system, workload, field)


def fmt(v, unit):
    if v is None:
        return "–"
    if unit == "ms":
        return f"{v:,.2f} ms" if v < 100 else f"{v:,.0f} ms"
    return f"{v:,.0f}"


def draw(results, svg):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = columns(results)
    n = len(ROWS)
    ncols = 3
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(15, 3.2 * nrows))
    colors = {"etcd": "#4e79a7", "ZooKeeper": "#f28e2b", "lockfs": "#59a14f",
              "lockfs (CLI protocol)": "#8cd17d"}
    for ax, row in zip(axes.flat, ROWS):
        title, unit, lower, *_ = row
        labels, values = [], []
        for col in cols:
            v = cell(results, col, row)
            if v is not None:
                labels.append(col[1])
                values.append(v)
        bars = ax.bar(range(len(values)), values, color=[colors[label] for label in labels])
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels([label.replace(" (CLI protocol)", "\n(CLI)") for label in labels],
                           fontsize=8)
        ax.set_title(f"{title}\n({'lower' if lower else 'higher'} is better)", fontsize=9)
        ax.set_ylabel(unit)
        if values and min(values) > 0 and max(values) / min(values) > 50:
            ax.set_yscale("log")
        for b, v in zip(bars, values):
            ax.annotate(fmt(v, unit), (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(svg)
    fig.savefig(svg[:-4] + ".png", dpi=80)
    plt.close(fig)


def table(results):
    cols = columns(results)
    out = ["| workload | " + " | ".join(c[1] for c in cols) + " |",
           "|---|" + "---|" * len(cols)]
    for row in ROWS:
        title, unit = row[0], row[1]
        out.append(f"| {title} | " + " | ".join(fmt(cell(results, c, row), unit)
                                                 for c in cols) + " |")
    return "\n".join(out)


def fill(markdown, begin, end, lines):
    """Replaces the section of `markdown` from marker `begin` through `end` with `lines` (the
    markers among them)."""
    with open(markdown) as f:
        text = f.read()
    if begin not in text or end not in text:
        raise SystemExit(f"{markdown}: no {begin} … {end} section to fill")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(markdown, "w") as f:
        f.write(head + "\n".join(lines) + tail)


def write(out_dir, markdown):
    results = latest(os.path.join(out_dir, "results.jsonl"))
    if not results:
        raise SystemExit("no full run in results.jsonl yet")
    svg = os.path.join(out_dir, "compare.svg")
    draw(results, svg)
    any_start = next(iter(results.values())).get("start", {})
    machine = any_start.get("machine", {})
    versions = ", ".join(line["version"] for s in results.values()
                         for w, line in s.items() if w == "start")
    runs = ", ".join(sorted({line["run"] for s in results.values() for line in s.values()}))
    failover = {s: results[s].get("failover", {}).get("times_ms") for s in results}
    lines = [
        BEGIN,
        f"Measured {runs} on {machine.get('cpus')} × {machine.get('cpu')}, "
        f"{machine.get('memory_gib')} GiB, Linux {machine.get('kernel')}; {versions}.",
        "",
        f"![lockfs, etcd and ZooKeeper side by side]({os.path.relpath(svg, os.path.dirname(markdown))})",
        "",
        table(results),
        "",
        "Failover rounds (ms): " + "; ".join(f"{s} {v}" for s, v in failover.items() if v),
        END,
    ]
    fill(markdown, BEGIN, END, lines)
    print(f"wrote {svg} and {markdown}")
    write_curves(out_dir, markdown)


CURVES_BEGIN, CURVES_END = "<!-- curves:begin -->", "<!-- curves:end -->"


def latest_curves(path):
    """{curve: [line by level]}: each curve from the latest full run of bench/curves.py that
    measured it (`--curves` measures some)."""
    lines = []
    with open(path) as f:
        for raw in f:
            line = json.loads(raw)
            if not line.get("short"):
                lines.append(line)
    if not lines:
        return {}
    run = {}
    for line in lines:
        run[line["curve"]] = max(run.get(line["curve"], ""), line["run"])
    out = {}
    for line in lines:
        if line["run"] == run[line["curve"]]:
            out.setdefault(line["curve"], []).append(line)
    for levels in out.values():
        levels.sort(key=lambda line: line["level"])
    return out


def ms_of(line, key, field="p50_ms"):
    return (line.get(key) or {}).get(field)


def draw_curves(curves, svg):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for curve, ax, xlabel in (("sessions", axes[0], "idle sessions"),
                              ("tree", axes[1], "files in the tree")):
        levels = [line for line in curves.get(curve, []) if "error" not in line]
        xs = [max(line["level"], 1) for line in levels]
        for key, label in (("mount_write", "echo > (mount)"), ("mount_flock", "flock cycle (mount)"),
                           ("cli_write", "write (CLI protocol)")):
            for field, style in (("p50_ms", "-o"), ("p99_ms", ":x")):
                ys = [ms_of(line, key, field) for line in levels]
                ax.plot(xs, ys, style, label=f"{label} {field[:3]}")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ms")
        ax.set_title(f"latency as {xlabel} grow")
        ax.legend(fontsize=6)
    ax = axes[2]
    for curve, label in (("sessions", "per idle session"), ("tree", "per file")):
        levels = [line for line in curves.get(curve, []) if "error" not in line]
        if len(levels) < 2:
            continue
        base = max(levels[0]["rss_mib"])
        xs = [line["level"] for line in levels[1:]]
        ys = [max(line["rss_mib"]) for line in levels[1:]]
        ax.plot(xs, ys, "-o", label=f"largest node's RSS ({curve})")
        ax.axhline(base, color="grey", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("sessions or files")
    ax.set_ylabel("MiB")
    ax.set_title("memory of the largest node")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(svg)
    fig.savefig(svg[:-4] + ".png", dpi=80)
    plt.close(fig)


def curves_tables(curves):
    out = []
    head = ("| {} | echo > p50 / p99 | flock cycle p50 / p99 | CLI write p50 / p99 | "
            "RSS per node (MiB) | {} |")
    for curve, what, extra in (("sessions", "idle sessions", "leader CPU with only keep-alives"),
                               ("tree", "files", "restart / new member caught up")):
        levels = curves.get(curve, [])
        if not levels:
            continue
        out += [head.format(what, extra), "|---|---|---|---|---|---|"]
        for line in levels:
            if "error" in line:
                out.append(f"| {line['level']:,} | breaks: {line['error'][:120]} | | | | |")
                continue

            def pair(key):
                return f"{ms_of(line, key):.2f} / {ms_of(line, key, 'p99_ms'):.2f} ms"

            rss = " / ".join(f"{r:.0f}" for r in line["rss_mib"])
            if curve == "sessions":
                last = f"{line['leader_idle_cpu_pct']:.0f} %"
            elif "restart_s" in line:
                last = f"{line['restart_s']:.2f} s / {line['join_s']:.2f} s"
            else:
                last = "–"
            out.append(f"| {line['level']:,} | {pair('mount_write')} | {pair('mount_flock')} | "
                       f"{pair('cli_write')} | {rss} | {last} |")
        out.append("")
    return "\n".join(out)


def write_curves(out_dir, markdown):
    path = os.path.join(out_dir, "curves.jsonl")
    if not os.path.exists(path):
        return
    curves = latest_curves(path)
    if not curves:
        return
    svg = os.path.join(out_dir, "curves.svg")
    draw_curves(curves, svg)
    runs = ", ".join(sorted({levels[0]["run"] for levels in curves.values()}))
    lines = [CURVES_BEGIN, f"Measured {runs}, same machine, release build.", "",
             f"![lockfs as sessions and the tree grow]({os.path.relpath(svg, os.path.dirname(markdown))})",
             "", curves_tables(curves), CURVES_END]
    fill(markdown, CURVES_BEGIN, CURVES_END, lines)
    print(f"wrote {svg} and the curves in {markdown}")
