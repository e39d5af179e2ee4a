"""A self-contained HTML report of a run: every metric over time against gold, alerts, configuration.

``write_report(run_dir)`` reads what :mod:`collapseguard.reporting.runlog` finds (the
guard's trail, Lightning CSV logs, ``trainer_state.json``, TensorBoard events),
draws the plots with matplotlib and embeds them as PNG data, so the one HTML
file can be mailed or attached to a ticket and opened anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collapseguard.detection.alerts import PHASE_NAMES
from collapseguard.reporting.runlog import LOSS_KEYS, RunLog, read_run

COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
SEVERITY_COLORS = {"warn": "#ff7f0e", "critical": "#d62728"}
# the order metrics are shown in: the phases' signals first
_ORDER = ("tail_coverage", "gold_ppl_tail", "tail_mass", "gold_ppl", "gold_nll", "distinct_2", "vendi",
          "compression_ratio", "self_bleu", "total_variance", "effective_rank", "seq_rep_4", "loop_fraction",
          "duplicate_fraction")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the HTML report draws its plots with matplotlib: pip install 'collapseguard[cli]'") from None
    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bounds_series(run: RunLog, metric: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {"reference": [], "warn": [], "critical": []}
    for i, check in enumerate(run.checks):
        b = (check.get("bounds") or {}).get(metric)
        step = check.get("step") if check.get("step") is not None else i
        for key in out:
            if b and isinstance(b.get(key), int | float) and math.isfinite(b[key]):
                out[key].append((step, b[key]))
    return out


def _judged(runs: Sequence[RunLog]) -> list[str]:
    names = {m for r in runs for c in r.checks for m in (c.get("bounds") or {})}
    return sorted(names, key=lambda m: (_ORDER.index(m) if m in _ORDER else len(_ORDER), m))


def _mark_alerts(ax: Any, run: RunLog, metric: str | None, y: dict[float, float]) -> None:
    for alert in run.alerts:
        if metric is not None and alert.get("metric") != metric:
            continue
        step = alert.get("step")
        if step is None or step not in y:
            continue
        ax.scatter([step], [y[step]], s=60, marker="v" if alert.get("severity") == "warn" else "X",
                   color=SEVERITY_COLORS.get(alert.get("severity"), "k"), zorder=5)


def _health_figure(runs: Sequence[RunLog]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for color, run in zip(itertools.cycle(COLORS), runs):
        pts = run.series.get("health", [])
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", color=color, label=run.name)
            _mark_alerts(ax, run, None, dict(pts))
        for halt in run.halts:
            if halt.get("step") is not None:
                ax.axvline(halt["step"], color=SEVERITY_COLORS["critical"], ls="--", lw=1)
                ax.annotate("halt", (halt["step"], 0.02), color=SEVERITY_COLORS["critical"], fontsize=8)
    ax.axhline(0.5, color=SEVERITY_COLORS["critical"], ls=":", lw=1, label="critical bound (0.5)")
    ax.set(ylim=(0, 1.05), xlabel="step", ylabel="health", title="health (1 = as diverse as gold)")
    ax.scatter([], [], marker="v", color=SEVERITY_COLORS["warn"], label="warn alert")
    ax.scatter([], [], marker="X", color=SEVERITY_COLORS["critical"], label="critical alert")
    ax.legend(fontsize=7, loc="lower left", ncol=3)
    return _png(fig)


def _metric_figure(runs: Sequence[RunLog], metrics: Sequence[str], title: str, bands: bool) -> str | None:
    metrics = [m for m in metrics if any(r.series.get(m) for r in runs)]
    if not metrics:
        return None
    plt = _pyplot()
    cols = 3 if len(metrics) > 4 else min(len(metrics), 2)
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 2.9 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for color, run in zip(itertools.cycle(COLORS), runs):
            pts = run.series.get(metric, [])
            if not pts:
                continue
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color=color, label=run.name)
            _mark_alerts(ax, run, metric, dict(pts))
            if not bands:
                continue
            b = _bounds_series(run, metric)
            for key, style in (("reference", dict(color="0.35", ls="--")),
                               ("warn", dict(color=SEVERITY_COLORS["warn"], ls=":")),
                               ("critical", dict(color=SEVERITY_COLORS["critical"], ls=":"))):
                if b[key]:
                    ax.plot(*zip(*b[key], strict=True), lw=1.2, **style,
                            label=("reference (gold; for rises, the best so far)" if key == "reference" else f"{key} bound")
                            if run is runs[0] else None)
            if b["reference"] and b["warn"] and len(b["reference"]) == len(b["warn"]):
                xs = [s for s, _ in b["reference"]]
                ax.fill_between(xs, [v for _, v in b["reference"]], [v for _, v in b["warn"]], color="#2ca02c",
                                alpha=0.08, lw=0)
        ax.set_title(metric, fontsize=10)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = [], []
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return _png(fig)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _summary_rows(runs: Sequence[RunLog]) -> list[list[str]]:
    rows = []
    for run in runs:
        health = run.series.get("health", [])
        worst = {"critical": 0, "warn": 0}
        for a in run.alerts:
            worst[a.get("severity", "warn")] = worst.get(a.get("severity", "warn"), 0) + 1
        first = next((a for a in run.alerts if a.get("phase") != "fault"), None)
        overhead = run.series.get("overhead", [])
        rows.append([run.name, len(run.checks) or len(health), len(run.sentinel_checks),
                     f"{overhead[-1][1]:.1%}" if overhead else "-", f"{health[-1][1]:.2f}" if health else "-",
                     f"{min(v for _, v in health):.2f}" if health else "-", worst["warn"], worst["critical"],
                     f"step {first['step']}: {first['severity']} {first['phase']} ({first['metric']})" if first else "none",
                     "halted at step " + str(run.halts[-1].get("step")) if run.halts else "-", _last_good(run)])
    return rows


def _last_good(run: RunLog) -> str:
    """Where to roll back to: the step with the best health the trail recorded, and its checkpoint folder."""
    good = run.last_good
    if good is None:
        return "-"
    return f"step {good['step']} (health {good['health']:.2f})" + (f": {good['checkpoint']}" if good.get("checkpoint")
                                                                   else "")


def _config_html(run: RunLog) -> str:
    cfg = run.config
    if not cfg:
        return "<p>No configuration recorded (pass <code>alert_log=</code> to the callback to keep one).</p>"
    gold = cfg.get("gold", {})
    parts = [f"<p>gold set <b>{html.escape(str(gold.get('name')))}</b>: {gold.get('size')} {gold.get('kind')} "
             f"items, sha256 <code>{html.escape(str(gold.get('fingerprint', ''))[:16])}…</code>; "
             f"collapseguard {html.escape(str(cfg.get('collapseguard')))}, {cfg.get('world_size', 1)} process(es)</p>"]
    guard = cfg.get("guard", {})
    asked, judged = guard.get("num_samples"), guard.get("prompts_per_check")
    if judged is not None:
        fewer = f" (<code>num_samples={asked}</code> asks for more than the gold set yields)" if judged != asked else ""
        parts.append(f"<p>each check judges <b>{judged}</b> prompts{fewer}</p>")
    parts.append(_table(["setting", "value"], [[k, json.dumps(v) if isinstance(v, dict) else _fmt(v)]
                                               for k, v in guard.items() if v is not None]))
    parts.append(_table(["threshold", "value"], [[k, _fmt(v)] for k, v in cfg.get("thresholds", {}).items()]))
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f4f4f4}img{max-width:100%}.critical{color:#d62728;font-weight:600}
.warn{color:#c55f00}.note{color:#666;font-size:.85em}
"""


def render_report(runs: Sequence[RunLog], title: str) -> str:
    """The report's HTML for ``runs`` (plots embedded)."""
    judged = _judged(runs)
    shown = {"health", *judged}
    human = [m for m in ("human_fraction", "human_fraction_target", "incoming_human_fraction")
             if any(r.series.get(m) for r in runs)]
    sentinel = [m for m in ("sentinel/health", "sentinel/gold_ppl", "sentinel/gold_ppl_tail", "sentinel/overconfidence")
                if any(r.series.get(m) for r in runs)]
    timing = [m for m in ("overhead",) if any(r.series.get(m) for r in runs)]
    other = sorted({m for r in runs for m in r.guard_metrics if not m.startswith("sentinel/")}
                   - shown - set(human) - set(timing) - {"check_failed", "severity"})
    losses = [m for m in LOSS_KEYS if any(r.series.get(m) for r in runs)]
    figures = [("Health", _health_figure(runs) if any(r.series.get("health") for r in runs) else None),
               ("Judged metrics against gold", _metric_figure(
                   runs, judged, "each judged metric; dashed: its reference (gold, or for perplexity rises the best "
                         "value so far); dotted: warn / critical bounds", True)),
               ("Sentinel tier (gold scored teacher-forced between full checks)", _metric_figure(
                   runs, sentinel, "the sentinel's health and model-side metrics", False)),
               ("Guard overhead", _metric_figure(runs, timing, "the guard's share of training wall time", False)),
               ("Human share of the training data", _metric_figure(runs, human, "human fraction", False)),
               ("Training", _metric_figure(runs, losses, "losses from the framework's logs", False)),
               ("Other metrics (reported, not judged)", _metric_figure(runs, other, "reported metrics", False))]
    alerts = sorted(((a.get("step") if a.get("step") is not None else -1, r.name, a) for r in runs for a in r.alerts),
                    key=lambda t: (t[0], t[1]))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='note'>written {time.strftime('%Y-%m-%d %H:%M:%S')} by collapseguard report</p>",
             "<h2>Summary</h2>",
             _table(["run", "checks", "sentinel checks", "guard's share of training time", "final health",
                     "lowest health", "warn alerts", "critical alerts", "first alert", "halt", "last good checkpoint"],
                    _summary_rows(runs))]
    for heading, png in figures:
        if png is not None:
            parts.append(f"<h2>{heading}</h2><img alt='{html.escape(heading)}' src='data:image/png;base64,{png}'>")
    parts.append("<h2>Alerts</h2>")
    if alerts:
        rows = "".join(
            f"<tr><td>{step}</td><td>{html.escape(name)}</td><td class='{html.escape(str(a.get('severity')))}'>"
            f"{html.escape(str(a.get('severity')))}</td><td>{html.escape(str(a.get('phase')))}: "
            f"{html.escape(PHASE_NAMES.get(a.get('phase', ''), ''))}</td><td>{html.escape(str(a.get('metric')))}</td>"
            f"<td>{html.escape(str(a.get('message')))}</td></tr>" for step, name, a in alerts)
        parts.append("<table><thead><tr><th>step</th><th>run</th><th>severity</th><th>phase</th><th>metric</th>"
                     f"<th>message</th></tr></thead><tbody>{rows}</tbody></table>")
    else:
        parts.append("<p>No alerts.</p>")
    for run in runs:
        for halt in run.halts:
            parts.append(f"<p class='critical'>{html.escape(run.name)}: {html.escape(str(halt.get('reason')))}</p>")
    parts.append("<h2>Configuration</h2>")
    for run in runs:
        parts.append(f"<h3>{html.escape(run.name)}</h3>{_config_html(run)}")
    parts.append("<h2>Sources</h2><ul>" + "".join(
        f"<li>{html.escape(r.name)}: {html.escape(', '.join(r.sources) or 'nothing read')}"
        + "".join(f"<br><span class='note'>{html.escape(n)}</span>" for n in r.notes) + "</li>" for r in runs)
        + "</ul></body></html>")
    return "".join(parts)


def write_report(run_dir: str | Path, out: str | Path | None = None, title: str | None = None) -> Path:
    """Read ``run_dir`` and write its HTML report (default ``run_dir/report.html``); returns the path.

    Raises:
        FileNotFoundError / ValueError: the folder is missing or holds no run logs (see :func:`read_run`).
        ImportError: matplotlib is not installed.
    """
    runs = read_run(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(runs, title or f"collapseguard report: {Path(run_dir).resolve().name}"),
                    encoding="utf-8")
    return path
