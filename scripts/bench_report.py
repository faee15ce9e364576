#!/usr/bin/env python3
"""Turns the benchmarks' results into the tables of BENCHMARKS.md and a chart.

    scripts/bench_rounds.sh 3                     # three rounds of `cargo bench --bench admission`
    cargo bench --bench sweep && cargo bench --bench memory
    python3 scripts/bench_report.py [CRITERION_DIR] [--svg docs/admission.svg]

CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion, else target/criterion, in the repository.
Each round is a criterion baseline named `round1`, `round2`, ... (criterion's `new` when there
are none); every figure below is the median over the rounds, and every ratio is taken within a
round, between things measured side by side, before the median.

The `threads` group runs a control (a limiter per thread, nothing shared) before and after the
others. A round in which the control did not reach 1.6 times the throughput on two threads
did not get two cores, and is discarded.

Also reads target/bench-results/sweep.json and memory.json, when the `sweep` and `memory`
benchmarks have written them. Python 3 standard library only.
"""

import json
import os
import statistics
import sys
from pathlib import Path

OURS = "tower_connlimit"
FLOOR = "atomic_floor"
ORDER = [
    "tower_connlimit",
    "naive_mutex_hashmap",
    "governor_check_key",
    "pingora_inflight",
    "tower_semaphore",
    "atomic_floor",
]
COLOURS = {
    "tower_connlimit": "#1f6feb",
    "naive_mutex_hashmap": "#d29922",
    "governor_check_key": "#2da44e",
    "pingora_inflight": "#bf3989",
    "tower_semaphore": "#8957e5",
    "atomic_floor": "#6e7781",
}
# The least throughput two threads must reach over one, in the control, for a round to count.
CONTROL_SCALING = 1.6


def nanos(estimates_path):
    """The time per iteration criterion reports: the slope when it fitted one, else the mean."""
    estimates = json.loads(estimates_path.read_text())
    chosen = estimates.get("slope") or estimates["mean"]
    return chosen["point_estimate"]


def load(root):
    """{round: {group: {case: {implementation: ns}}}} from criterion's estimates."""
    rounds = {}
    for estimates in sorted(root.glob("*/*/*/*/estimates.json")):
        baseline = estimates.parent.name
        case_dir = estimates.parent.parent
        implementation, group = case_dir.parent.name, case_dir.parent.parent.name
        rounds.setdefault(baseline, {}).setdefault(group, {}).setdefault(case_dir.name, {})[
            implementation
        ] = nanos(estimates)
    named = {name: r for name, r in rounds.items() if name.startswith("round")}
    if named:
        return dict(sorted(named.items(), key=lambda item: int(item[0][5:] or 0)))
    return {"new": rounds["new"]} if "new" in rounds else {}


def ordered(implementations):
    known = [i for i in ORDER if i in implementations]
    return known + sorted(i for i in implementations if i not in ORDER)


def median_table(rounds, group):
    """{case: {implementation: [ns per round]}} for one group."""
    table = {}
    for results in rounds.values():
        for case, by_impl in results.get(group, {}).items():
            for implementation, ns in by_impl.items():
                table.setdefault(case, {}).setdefault(implementation, []).append(ns)
    return table


def ratio_in_rounds(rounds, group, case, a, b):
    """The median over rounds of a's time divided by b's, each round's ratio on its own."""
    ratios = [
        r[group][case][a] / r[group][case][b]
        for r in rounds.values()
        if group in r and case in r[group] and a in r[group][case] and b in r[group][case]
    ]
    return statistics.median(ratios) if ratios else None


def side_by_side(rounds, group, title, reference=OURS):
    cases = median_table(rounds, group)
    if not cases:
        return ""
    implementations = ordered({i for case in cases.values() for i in case})
    lines = [f"### {title}\n"]
    lines.append(
        f"ns per operation, median of {len(rounds)} round(s); in brackets, `{reference}`'s time "
        "divided by that one's, per round, then the median.\n"
    )
    lines.append("| case | " + " | ".join(f"`{i}`" for i in implementations) + " |")
    lines.append("|---" * (len(implementations) + 1) + "|")
    for case, by_impl in cases.items():
        cells = []
        for i in implementations:
            if i not in by_impl:
                cells.append("")
                continue
            cell = f"{statistics.median(by_impl[i]):.1f}"
            ratio = ratio_in_rounds(rounds, group, case, reference, i)
            if i != reference and ratio is not None:
                cell += f" ({ratio:.2f}×)"
            cells.append(cell)
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def threads(rounds):
    """Per round: the control's scaling before and after, and each implementation's."""
    lines = ["### Two threads\n"]
    lines.append(
        "Throughput on two threads divided by throughput on one (time per operation on one "
        "thread ÷ time per operation of both threads together), each thread pinned to a core and "
        f"on 5,000 clients of its own. A round whose control scaled less than {CONTROL_SCALING}× "
        "before or after is discarded.\n"
    )
    kept = {}
    implementations = set()
    rows = []
    for name, r in rounds.items():
        group = r.get("threads", {})
        one, two = group.get("1_thread", {}), group.get("2_threads", {})
        scaling = {i: one[i] / two[i] for i in one if i in two}
        implementations |= set(scaling)
        controls = [scaling.get("control_before"), scaling.get("control_after")]
        ok = all(c is not None and c >= CONTROL_SCALING for c in controls)
        rows.append((name, scaling, ok))
        if ok:
            kept[name] = scaling
    implementations = ["control_before"] + ordered(
        implementations - {"control_before", "control_after"}
    ) + ["control_after"]
    lines.append("| round | " + " | ".join(f"`{i}`" for i in implementations) + " | |")
    lines.append("|---" * (len(implementations) + 2) + "|")
    for name, scaling, ok in rows:
        cells = [f"{scaling[i]:.2f}×" if i in scaling else "" for i in implementations]
        lines.append(
            f"| {name} | " + " | ".join(cells) + (" | kept |" if ok else " | **discarded** |")
        )
    if kept:
        cells = []
        for i in implementations:
            values = [s[i] for s in kept.values() if i in s]
            cells.append(f"**{statistics.median(values):.2f}×**" if values else "")
        lines.append(f"| median of {len(kept)} kept | " + " | ".join(cells) + " | |")
    lines.append("")
    return "\n".join(lines)


def targets(rounds):
    """The issue's ratio targets, as measured."""
    lines = ["### Ratios against the targets\n"]
    lines.append("| ratio | measured | target |")
    lines.append("|---|---|---|")

    def row(label, group, case, other, target, ours=OURS):
        ratio = ratio_in_rounds(rounds, group, case, ours, other)
        if ratio is not None:
            lines.append(f"| {label} | {ratio:.2f}× | {target} |")

    row("one client ÷ atomic floor", "admit_release", "one_client", FLOOR, "≤ 7.5×")
    row("one client ÷ naive mutex map", "admit_release", "one_client", "naive_mutex_hashmap", "≤ 0.5×")
    row("one client ÷ governor `check_key`", "admit_release", "one_client", "governor_check_key", "≤ 1×")
    row("10,000 clients ÷ atomic floor", "admit_release", "10k_clients", FLOOR, "≤ 10×")
    row("refused ÷ atomic floor", "rejected", "one_client", FLOOR, "≤ 5×")
    row("10,000 governor `check_key` ÷ 10,000 clients", "admit_release", "10k_clients",
        OURS, "≥ 1× (no slower)", ours="governor_check_key")
    for case, label in [("10k_clients", "10,000 clients"), ("one_client", "one client")]:
        row(f"token bucket, {label} ÷ governor `check_key`", "rated", case,
            "governor_check_key", "≤ 1.25×", ours="token_bucket")
    for strategy in ["sliding_window", "cooldown"]:
        row(f"{strategy.replace('_', ' ')}, 10,000 clients ÷ token bucket", "rated",
            "10k_clients", "token_bucket", "≤ 1.1×", ours=strategy)
    row("request rate and a path rule, 10,000 clients ÷ governor `check_key`", "rated",
        "10k_clients", "governor_check_key", "", ours="request_and_path")
    row("keyed by a 32-byte key ÷ keyed by address, 10,000 clients", "keyed", "10k_clients",
        "by_address", "≤ 1.3×", ours="by_key")
    cidr = [
        r["cidr_lists"]["admit_release"]["10k_cidrs_each"]
        / r["cidr_lists"]["admit_release"][OURS]
        for r in rounds.values()
        if "10k_cidrs_each" in r.get("cidr_lists", {}).get("admit_release", {})
    ]
    if cidr:
        lines.append(
            f"| 10,000 CIDRs in each list ÷ none | {statistics.median(cidr):.2f}× | ≤ 1.10× |"
        )
    lines.append("")
    return "\n".join(lines)


def results_file(root, name):
    path = root.parent / "bench-results" / name
    return json.loads(path.read_text()) if path.exists() else None


def sweep(root):
    runs = results_file(root, "sweep.json")
    if not runs:
        return ""
    lines = ["### Admissions during a sweep of 1,000,000 expired clients\n"]
    lines.append(
        "| round | sweep | admissions during it | slowest | 99.9th percentile | median "
        "| control: slowest | control: 99.9th |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for n, r in enumerate(runs, 1):
        control = (
            f"{r['control_slowest_us']:.0f} µs | {r['control_p999_us']:.2f} µs"
            if "control_slowest_us" in r
            else "| "
        )
        lines.append(
            f"| {n} | {r['sweep_ms']:.0f} ms | {r['admissions']:,} | {r['slowest_us']:.0f} µs "
            f"| {r['p999_us']:.2f} µs | {r['median_ns']:.0f} ns | {control} |"
        )
    lines.append("")
    return "\n".join(lines)


def memory(root):
    cases = results_file(root, "memory.json")
    if not cases:
        return ""
    mib = 1024 * 1024
    lines = ["### Memory per tracked client, and after they expire\n"]
    lines.append(
        "| config | heap per client | RSS per client | RSS at start | with 1,000,000 clients "
        "| after the sweep | after `malloc_trim(0)` |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for c in cases:
        lines.append(
            f"| {c['case']} | {c['heap_per_client']:.0f} B | {c['rss_per_client']:.0f} B "
            f"| {c['rss_start'] / mib:.1f} MiB | {c['rss_full'] / mib:.0f} MiB "
            f"| {c['rss_after'] / mib:.0f} MiB | {c['rss_trimmed'] / mib:.1f} MiB |"
        )
    lines.append("")
    return "\n".join(lines)


def svg(rounds):
    """Horizontal bars, one block per case of `admit_release` and `rejected`, median ns."""
    rows = []  # (heading,) or (case, implementation, ns)
    for group in ["admit_release", "rejected"]:
        cases = median_table(rounds, group)
        for case, by_impl in cases.items():
            rows.append((f"{group} · {case}",))
            for i in ordered(by_impl):
                rows.append((case, i, statistics.median(by_impl[i])))
    if not any(len(r) == 3 for r in rows):
        return None
    top = max(r[2] for r in rows if len(r) == 3)
    left, bar_w, row_h, head_h = 200, 560, 16, 24
    height = 60 + sum(head_h if len(r) == 1 else row_h for r in rows) + 20
    width = left + bar_w + 90
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="22" font-size="15" font-weight="bold">'
        "Admission cost: ns per operation (lower is better)</text>",
        '<text x="10" y="40" fill="#57606a">cargo bench --bench admission; every bar of a '
        f"block measured side by side; median of {len(rounds)} round(s)</text>",
    ]
    y = 60
    for row in rows:
        if len(row) == 1:
            y += 6
            out.append(f'<text x="10" y="{y + 12}" font-weight="bold">{row[0]}</text>')
            y += head_h - 6
            continue
        _, implementation, ns = row
        w = max(1.0, bar_w * ns / top)
        colour = COLOURS.get(implementation, "#999999")
        out.append(f'<text x="{left - 6}" y="{y + 11}" text-anchor="end">{implementation}</text>')
        out.append(
            f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{row_h - 4}" fill="{colour}"/>'
        )
        out.append(f'<text x="{left + w + 4:.1f}" y="{y + 11}">{ns:.1f} ns</text>')
        y += row_h
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    svg_path = None
    if "--svg" in argv:
        at = argv.index("--svg")
        if at + 1 >= len(argv):
            sys.exit("--svg needs a file name, such as docs/admission.svg")
        svg_path = Path(argv[at + 1])
        argv = argv[:at] + argv[at + 2 :]
    if argv:
        root = Path(argv[0])
    else:
        repository = Path(__file__).resolve().parents[1]
        target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
        root = (target if target.is_absolute() else repository / target) / "criterion"
    rounds = load(root)
    if not rounds:
        sys.exit(f"no criterion results under {root}: run scripts/bench_rounds.sh first")
    sections = [
        targets(rounds),
        side_by_side(rounds, "admit_release", "Admit and release"),
        side_by_side(rounds, "rejected", "A refused admission"),
        side_by_side(rounds, "gate", "The layered gate (10,000 clients)"),
        side_by_side(rounds, "rated", "A rate rule that never refuses, by strategy, and governor",
                     reference="governor_check_key"),
        side_by_side(rounds, "keyed", "Requests keyed by address and by a 32-byte key",
                     reference="by_address"),
        side_by_side(rounds, "cidr_lists", "10,000 networks in each list"),
        side_by_side(rounds, "config_swap", "The config replaced live (10,000 clients)"),
        threads(rounds),
        sweep(root),
        memory(root),
    ]
    print("\n".join(s for s in sections if s))
    if svg_path:
        chart = svg(rounds)
        if chart:
            svg_path.parent.mkdir(parents=True, exist_ok=True)
            svg_path.write_text(chart)
            print(f"wrote {svg_path}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
