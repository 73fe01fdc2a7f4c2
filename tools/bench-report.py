#!/usr/bin/env python3
"""Summarises tools/bench.sh results: medians per target and workload, the ratio of each
to kernel overlayfs, as a Markdown table on stdout and a grouped bar chart (SVG).

    bench-report.py RESULTS.tsv CHART.svg TARGET...

Rows of RESULTS.tsv: target, workload, round, value. A workload whose name has an up
arrow is better higher (throughput); every other one is better lower.
"""
import statistics
import sys
from collections import defaultdict


def main():
    results, chart, targets = sys.argv[1], sys.argv[2], sys.argv[3:]
    values = defaultdict(list)
    workloads = []
    with open(results) as f:
        for line in f:
            target, workload, _round, value = line.rstrip("\n").split("\t")
            if workload not in workloads:
                workloads.append(workload)
            try:
                values[(target, workload)].append(float(value))
            except ValueError:
                pass
    median = {k: statistics.median(v) for k, v in values.items() if v}

    def ratio(target, workload):
        # Rootless targets against the kernel run the same way (kernel-rootless itself
        # against the kernel).
        rootless = target.endswith("-rootless") and target != "kernel-rootless"
        base = median.get(("kernel-rootless" if rootless else "kernel", workload))
        own = median.get((target, workload))
        if base is None or own is None or base == 0:
            return None
        return own / base

    print("| workload | " + " | ".join(targets) + " |")
    print("|---|" + "---:|" * len(targets))
    for w in workloads:
        cells = []
        for t in targets:
            m = median.get((t, w))
            if m is None:
                cells.append("–")
                continue
            r = ratio(t, w)
            cells.append(f"{m:.3g}" + (f" ({r:.2f}×)" if r is not None and t != "kernel" else ""))
        print(f"| {w} | " + " | ".join(cells) + " |")
    print()
    print("Each cell: the median, then its ratio to kernel overlayfs (↑: higher is better; "
          "otherwise lower is better); a `-rootless` target's ratio is to kernel-rootless.")
    write_chart(chart, workloads, targets, ratio)


def write_chart(path, workloads, targets, ratio):
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
    bar, gap, left, top, height = 10, 14, 330, 30, 0
    rows = []
    for w in workloads:
        rows.append((w, [(t, ratio(t, w)) for t in targets if t != "kernel"]))
    per = max(1, len(targets) - 1) * bar + gap
    height = top + len(rows) * per + 40
    scale = 60  # pixels per 1x
    width = left + scale * 6 + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="10" y="18" font-size="13">Ratio to kernel overlayfs (1× = kernel; '
           f'bars capped at 6×)</text>',
           f'<line x1="{left + scale}" y1="{top}" x2="{left + scale}" y2="{height - 30}" '
           f'stroke="#000" stroke-dasharray="3,3"/>']
    y = top
    for w, bars in rows:
        out.append(f'<text x="{left - 6}" y="{y + per / 2}" text-anchor="end">{escape(w)}</text>')
        for i, (t, r) in enumerate(bars):
            if r is None:
                continue
            length = min(r, 6.0) * scale
            c = colours[targets.index(t) % len(colours)]
            out.append(f'<rect x="{left}" y="{y + i * bar}" width="{length:.1f}" '
                       f'height="{bar - 1}" fill="{c}"/>')
            out.append(f'<text x="{left + length + 3:.1f}" y="{y + i * bar + bar - 2}" '
                       f'font-size="9">{r:.2f}</text>')
        y += per
    x = left
    for i, t in enumerate(t for t in targets if t != "kernel"):
        c = colours[targets.index(t) % len(colours)]
        out.append(f'<rect x="{x}" y="{height - 20}" width="10" height="10" fill="{c}"/>')
        out.append(f'<text x="{x + 14}" y="{height - 11}">{escape(t)}</text>')
        x += 130
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    main()
