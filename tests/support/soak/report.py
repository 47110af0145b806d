"""The soak's HTML report (``scripts/soak.py --report PATH``): the summary table and plots drawn
with matplotlib (Agg, no display), each embedded as a PNG so the one file is the whole report: RSS,
open descriptors and threads of each agent and its media children over the consultations, the call's
recovery time per fault kind, and each consultation's length."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a kiosk, CI or a server
import matplotlib.pyplot as plt
from matplotlib.axes import Axes


def _png(draw: Callable[[Axes], None]) -> str:
    figure, axes = plt.subplots(figsize=(7.5, 3.2))
    try:
        draw(axes)
        axes.grid(alpha=0.3)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _usage(rows: list[dict[str, Any]], side: str, part: str, key: str) -> list[float | None]:
    values: list[float | None] = []
    for row in rows:
        sample = (row.get("in_call") or {}).get(side) if part == "media" else row["usage"]["end"][side]
        values.append(None if sample is None else float(sample[part][key]))
    return values


def _usage_plot(rows: list[dict[str, Any]], key: str, label: str) -> Callable[[Axes], None]:
    def draw(axes: Axes) -> None:
        x = list(range(len(rows)))
        for side in ("kiosk", "provider"):
            for part in ("agent", "media"):
                values = _usage(rows, side, part, key)
                axes.plot(
                    x, [float("nan") if v is None else v for v in values], marker="o", label=f"{side} {part}"
                )
        kills = [row["index"] for row in rows if any(f["kind"] == "kiosk-sigkill" for f in row["faults"])]
        for index in kills:
            axes.axvline(index, color="grey", linestyle=":", linewidth=1)
        axes.set_xlabel("consultation (dotted: the kiosk agent killed and started again)")
        axes.set_ylabel(label)
        axes.legend(fontsize=7, ncol=2)

    return draw


def _recovery_plot(rows: list[dict[str, Any]]) -> Callable[[Axes], None]:
    def draw(axes: Axes) -> None:
        by_kind: dict[str, list[float]] = {}
        for row in rows:
            for fault in row["faults"]:
                if "recovery_s" in fault:
                    by_kind.setdefault(fault["kind"], []).append(fault["recovery_s"])
        kinds = sorted(by_kind)
        for n, kind in enumerate(kinds):
            axes.scatter([n] * len(by_kind[kind]), by_kind[kind])
        axes.set_xticks(range(len(kinds)), kinds, fontsize=8)
        axes.set_ylabel("call live again after (s)")

    return draw


def _length_plot(rows: list[dict[str, Any]]) -> Callable[[Axes], None]:
    def draw(axes: Axes) -> None:
        colors = ["tab:green" if row["completed"] else "tab:red" for row in rows]
        axes.bar([row["index"] for row in rows], [row["seconds"] for row in rows], color=colors)
        axes.set_xlabel("consultation (red: failed)")
        axes.set_ylabel("seconds, check-in to summary")

    return draw


def write_report(path: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    plots = [
        ("Resident memory (MiB)", _usage_plot(rows, "rss_mb", "RSS (MiB)")),
        ("Open file descriptors", _usage_plot(rows, "fds", "open fds")),
        ("Threads", _usage_plot(rows, "threads", "threads")),
        ("Recovery of the call per fault kind", _recovery_plot(rows)),
        ("Consultation length", _length_plot(rows)),
    ]
    table_keys = ("consultations", "completed", "emergencies", "faults_by_kind", "chat", "audit", "recovery")
    table = "".join(
        f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(json.dumps(summary.get(k)))}</code></td></tr>"
        for k in table_keys
    )
    growth = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{g['per_consultation']}</td><td>{html.escape(json.dumps(g['after_warm_up']))}</td></tr>"
        for name, g in summary["growth"].items()
    )
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in summary.get("problems", [])) or "<li>none</li>"
    figures = "".join(
        f"<h2>{html.escape(title)}</h2>"
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{_png(draw)}">'
        for title, draw in plots
    )
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>telehealth-agent soak</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}td,th{text-align:left;padding:2px 8px}"
        "code{font-size:85%}</style>"
        f"<h1>Soak: {summary['consultations']} consultations, seed {summary.get('seed')}</h1>"
        f"<h2>Problems</h2><ul>{problems}</ul><table>{table}</table>"
        f"<h2>Growth per consultation (least squares, after warm-up)</h2>"
        f"<table><tr><th>series</th><th>per consultation</th><th>range judged</th></tr>{growth}</table>"
        f"{figures}\n",
        encoding="utf-8",
    )
