"""Plain-text tables for the dry run and ``gammaray status`` (rows are also the JSON output)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # status tables must not import torch (through the spec): they are read-only views
    from orchestrator.grids.expand import RunSpec

# Axes with a column of their own; any other swept key gets a column named by its last segment.
_FIXED = ("model.preset", "train.tokens", "train.tokens_per_param", "init.gamma", "optim.weight_decay")


def plan_rows(specs: Sequence[RunSpec], done: Iterable[str]) -> list[dict[str, Any]]:
    """One row per run: id, N, D, γ, λ, FLOPs, estimated seconds, done, plus other swept keys."""
    from orchestrator.grids.estimate import estimate_seconds

    done = set(done)
    rows = []
    for spec in specs:
        init = spec.config.init
        row: dict[str, Any] = {
            "id": spec.run_id,
            "preset": spec.config.model.preset,
            "N": spec.n_params,
            "D": spec.tokens,
            "gamma": init.gamma if init.scheme == "gamma" else None,
            "init": init.scheme if init.scheme != "gamma" else None,
            "weight_decay": spec.config.optim.weight_decay,
            "FLOPs": spec.train_flops,
            "est_s": round(estimate_seconds(spec), 1),
            "done": spec.run_id in done,
        }
        for key, value in spec.point:
            if key not in _FIXED:
                row[key] = value
        rows.append(row)
    return rows


def format_plan(rows: Sequence[dict[str, Any]]) -> str:
    extra = (
        [
            k
            for k in rows[0]
            if k not in ("id", "preset", "N", "D", "gamma", "init", "weight_decay", "FLOPs", "est_s", "done")
        ]
        if rows
        else []
    )
    header = [
        "run id",
        "preset",
        "N",
        "D",
        "γ",
        "λ",
        "FLOPs",
        "est. time",
        *[k.rsplit(".", 1)[-1] for k in extra],
        "",
    ]
    body = [
        [
            r["id"],
            r["preset"],
            human(r["N"]),
            human(r["D"]),
            _num(r["gamma"]) if r["gamma"] is not None else str(r["init"]),
            _num(r["weight_decay"]),
            f"{r['FLOPs']:.3g}",
            format_duration(r["est_s"]),
            *[str(r.get(k)) for k in extra],
            "done" if r["done"] else "",
        ]
        for r in rows
    ]
    return format_table(header, body)


def format_status(document: dict[str, Any]) -> str:
    header = ["run id", "state", "preset", "N", "D", "γ", "λ", "eval loss", "tokens", "tok/s", "reason"]
    body = [
        [
            r["id"],
            r["state"],
            str(r["preset"] or ""),
            human(r["N"]),
            human(r["D"]),
            _num(r["gamma"]),
            _num(r["weight_decay"]),
            "" if r["loss"] is None or not math.isfinite(r["loss"]) else f"{r['loss']:.4f}",
            human(r["tokens"]),
            "" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:,.0f}",
            r["reason"] or "",
        ]
        for r in document["runs"]
    ]
    counts = "  ".join(f"{n} {state}" for state, n in document["counts"].items() if n)
    driver = document.get("driver")
    if driver and not driver["exited"]:
        seen = driver["seconds_since_heartbeat"]
        counts += f"  (driver pid {driver['pid']} on {driver['host']}, last seen {seen:.0f} s ago)"
    return f"grid {document['grid']} in {document['tracking_uri']}: {counts or 'no runs'}\n" + format_table(
        header, body
    )


def format_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header, *body]
    ]
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """90 → ``1m30s``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def human(value: Any) -> str:
    """12_345_678 → ``12.3M``; None → ``""``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    value = float(value)
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:g}"


def _num(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, (int, float)) else str(value)
