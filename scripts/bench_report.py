#!/usr/bin/env python3
"""Turns the criterion results of `cargo bench --bench admission` into tables and a plot.

    cargo bench --bench admission
    python3 scripts/bench_report.py [CRITERION_DIR] [--svg docs/admission.svg]

CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion, else target/criterion, in the repository
(an absolute CARGO_TARGET_DIR is used as it is). Prints one
Markdown table per benchmark group (the time per operation of each implementation, as criterion
prints it, and this crate's time divided by it) and writes a bar chart of every group as SVG.

Python 3 standard library only.
"""

import json
import os
import sys
from pathlib import Path

# The implementation every ratio is taken against, and the order of the bars in each case.
OURS = "tower_connlimit"
ORDER = [
    "tower_connlimit",
    "tower_connlimit_gate_on",
    "tower_connlimit_unshared",
    "naive_mutex_hashmap",
    "tower_global_concurrency_limit",
    "atomic_floor",
]
COLOURS = {
    "tower_connlimit": "#1f6feb",
    "tower_connlimit_gate_on": "#58a6ff",
    "tower_connlimit_unshared": "#79c0ff",
    "naive_mutex_hashmap": "#d29922",
    "tower_global_concurrency_limit": "#8957e5",
    "atomic_floor": "#6e7781",
}
GROUPS = [
    "admit_release",
    "admit_release_held",
    "admit_release_threads",
    "admit_release_gate",
    "admit_release_config_swap",
    "rejected_admit",
]


def nanos(estimates_path):
    """The time per iteration criterion reports: the slope when it fitted one, else the mean."""
    estimates = json.loads(estimates_path.read_text())
    chosen = estimates.get("slope") or estimates["mean"]
    return chosen["point_estimate"]


def load(root):
    """{group: {case: {implementation: ns}}} from criterion's `new` estimates."""
    results = {}
    for estimates in sorted(root.glob("*/*/*/new/estimates.json")):
        case_dir = estimates.parent.parent
        implementation, group = case_dir.parent.name, case_dir.parent.parent.name
        results.setdefault(group, {}).setdefault(case_dir.name, {})[implementation] = nanos(
            estimates
        )
    return results


def ordered(implementations):
    known = [i for i in ORDER if i in implementations]
    return known + sorted(i for i in implementations if i not in ORDER)


def tables(results):
    lines = []
    for group in [g for g in GROUPS if g in results] + sorted(set(results) - set(GROUPS)):
        cases = results[group]
        implementations = ordered({i for case in cases.values() for i in case})
        lines.append(f"### `{group}`\n")
        lines.append(f"ns per operation; in brackets, `{OURS}`'s time divided by this one's.\n")
        lines.append("| case | " + " | ".join(f"`{i}`" for i in implementations) + " |")
        lines.append("|---" * (len(implementations) + 1) + "|")
        for case, by_impl in cases.items():
            ours = by_impl.get(OURS)
            cells = []
            for i in implementations:
                if i not in by_impl:
                    cells.append("")
                elif ours and i != OURS:
                    cells.append(f"{by_impl[i]:.1f} ({ours / by_impl[i]:.2f}×)")
                else:
                    cells.append(f"{by_impl[i]:.1f}")
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def svg(results):
    """Horizontal bars, one block per group and case, on one linear scale in nanoseconds."""
    rows = []  # (label, implementation, ns) or (heading,)
    for group in [g for g in GROUPS if g in results]:
        rows.append((group,))
        for case, by_impl in results[group].items():
            for i in ordered(by_impl):
                rows.append((case, i, by_impl[i]))
    top = max(r[2] for r in rows if len(r) == 3)
    left, bar_w, row_h, head_h = 330, 560, 16, 24
    height = 60 + sum(head_h if len(r) == 1 else row_h for r in rows) + 40
    width = left + bar_w + 90
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="22" font-size="15" font-weight="bold">'
        "Admission cost: ns per admit+release (lower is better)</text>",
        '<text x="10" y="40" fill="#57606a">cargo bench --bench admission; '
        "every bar of one case measured in the same run</text>",
    ]
    y = 60
    for row in rows:
        if len(row) == 1:
            y += 6
            out.append(f'<text x="10" y="{y + 12}" font-weight="bold">{row[0]}</text>')
            y += head_h - 6
            continue
        case, implementation, ns = row
        w = max(1.0, bar_w * ns / top)
        colour = COLOURS.get(implementation, "#999999")
        out.append(
            f'<text x="{left - 6}" y="{y + 11}" text-anchor="end">'
            f"{case} · {implementation}</text>"
        )
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
        root = repository / os.environ.get("CARGO_TARGET_DIR", "target") / "criterion"
    results = load(root)
    if not results:
        sys.exit(f"no criterion results under {root}: run `cargo bench --bench admission` first")
    print(tables(results))
    if svg_path:
        svg_path.parent.mkdir(parents=True, exist_ok=True)
        svg_path.write_text(svg(results))
        print(f"wrote {svg_path}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
