#!/usr/bin/env python3
"""Draws the panels of monitoring/grafana-dashboard.json from scraped samples (the JSON that
tests/e2e/test_monitoring.py writes with FASTTIER_MONITORING_SCRAPE=<file>) into one PNG: same panel titles,
same layout, each panel's queries evaluated with monitoring/tools/promlite.py over the scraped series. It is a
rendering of the dashboard's panels with matplotlib, not a Grafana screenshot.

    python3 monitoring/tools/render_dashboard.py /tmp/scrape.json docs/img/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import promlite  # noqa: E402

DASHBOARD = Path(__file__).resolve().parents[1] / "grafana-dashboard.json"
UNITS = {"bytes": ("bytes", 1), "Bps": ("bytes/s", 1), "ms": ("ms", 1), "percentunit": ("%", 100),
         "short": ("", 1), "reqps": ("requests/s", 1), "currencyUSD": ("$", 1)}


def human(v: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scrape", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--dashboard", type=Path, default=DASHBOARD)
    ap.add_argument("--step", type=float, default=5.0, help="seconds between evaluated points")
    args = ap.parse_args()

    data = json.loads(args.scrape.read_text())
    samples = promlite.Samples.from_json(data["series"])
    dash = json.loads(args.dashboard.read_text())
    variables = {v["name"]: v["query"] for v in dash["templating"]["list"] if v["type"] in ("textbox", "constant")}
    variables["__rate_interval"] = data.get("rate_interval", "30s")
    times = samples.times()
    t0, t1 = times[0], times[-1]
    steps = [t0 + i * args.step for i in range(int((t1 - t0) / args.step) + 1)]
    ev = promlite.Evaluator(samples)

    panels = [p for p in dash["panels"] if p["type"] != "row"]
    rows = [p for p in dash["panels"] if p["type"] == "row"]
    # Grafana's grid: 24 columns of unit_w inches; a height unit of unit_h inches; a 0.5-inch header
    max_y = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_w, unit_h, head = 0.9, 0.42, 0.5
    W, H = 24 * unit_w, max_y * unit_h + head
    fig = plt.figure(figsize=(W, H))
    fig.suptitle(f"{dash['title']}: the dashboard's panels rendered from a real run's scrape "
                 f"({len(times)} scrapes, {(t1 - t0) / 60:.1f} min; not a Grafana screenshot)", fontsize=14,
                 y=1 - 0.12 / H)

    def axes_for(gp, left_in=0.65):
        x0 = gp["x"] * unit_w + left_in
        x1 = (gp["x"] + gp["w"]) * unit_w - 0.25
        y_top = head + gp["y"] * unit_h + 0.35  # room for the title
        y_bottom = head + (gp["y"] + gp["h"]) * unit_h - 0.45  # room for the x label
        return fig.add_axes([x0 / W, 1 - y_bottom / H, (x1 - x0) / W, (y_bottom - y_top) / H])

    for r in rows:
        fig.text(0.1 / W, 1 - (head + r["gridPos"]["y"] * unit_h + 0.3) / H, r["title"], fontsize=12, weight="bold")

    for p in panels:
        ax = axes_for(p["gridPos"], 2.3 if p["type"] == "state-timeline" else 0.65)
        unit, factor = UNITS.get(p["fieldConfig"]["defaults"].get("unit", "short"), ("", 1))
        ax.set_title(p["title"], fontsize=10, loc="left")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if p["type"] == "state-timeline":
            t = p["targets"][0]
            res = ev.range_query(t["expr"], steps, variables)
            names = sorted(res, key=lambda k: promlite.legend(t["legendFormat"], k))
            grid = []
            for k in names:
                vals = dict(res[k])
                grid.append([vals.get(s, math.nan) for s in steps])
            if grid:
                ax.imshow(grid, aspect="auto", interpolation="nearest", vmin=0, vmax=1,
                          cmap=ListedColormap(["#f2994a", "#27ae60"]),
                          extent=[0, (steps[-1] - t0) / 60, len(grid) - 0.5, -0.5])
                ax.set_yticks(range(len(grid)))
                ax.set_yticklabels([promlite.legend(t["legendFormat"], k)[:48] for k in names], fontsize=5)
                ax.grid(False)
            ax.text(1.0, 1.01, "green: fast tier   orange: leader", transform=ax.transAxes, fontsize=7,
                    ha="right", va="bottom")
            ax.set_xlabel("minutes", fontsize=7)
            continue
        # series an override puts on a right-hand axis with a unit of its own (Grafana's custom.axisPlacement)
        right = [(re.compile(o["matcher"]["options"]), {x["id"]: x["value"] for x in o["properties"]})
                 for o in p["fieldConfig"].get("overrides", [])
                 if o["matcher"]["id"] == "byRegexp"
                 and any(x["id"] == "custom.axisPlacement" and x["value"] == "right" for x in o["properties"])]
        ax2 = None
        plotted = 0
        lines = []
        for t in p["targets"]:
            res = ev.range_query(t["expr"], steps, variables)
            for k, pts in sorted(res.items(), key=lambda kv: promlite.legend(t["legendFormat"], kv[0])):
                name = promlite.legend(t["legendFormat"], k)
                xs = [(ts - t0) / 60 for ts, _ in pts]
                props = next((pr for rx, pr in right if rx.fullmatch(name)), None)
                target_ax, f = ax, factor
                if props is not None:
                    if ax2 is None:
                        ax2 = ax.twinx()
                        ax2.tick_params(labelsize=7)
                        u2, _ = UNITS.get(props.get("unit", "short"), ("", 1))
                        ax2.set_ylabel(u2, fontsize=7)
                    target_ax, f = ax2, 1
                ys = [v * f if not math.isinf(v) else math.nan for _, v in pts]
                lines += target_ax.plot(xs, ys, linewidth=1, label=name, color=f"C{plotted % 10}",
                                        linestyle="--" if target_ax is ax2 else "-")
                plotted += 1
        ax.set_xlim(0, (t1 - t0) / 60)
        ax.set_xlabel("minutes", fontsize=7)
        if unit:
            ax.set_ylabel(unit, fontsize=7)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: human(v)))
        if plotted:
            ax.legend(lines, [ln.get_label() for ln in lines], fontsize=5.5, loc="upper left",
                      ncol=3 if plotted > 6 else (2 if plotted > 3 else 1), framealpha=0.6)
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out} ({len(panels)} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
