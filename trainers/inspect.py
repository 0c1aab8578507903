"""``gammaray inspect``: what a config resolves to, and the init a researcher actually gets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from trainers.config import load_run_config, resolve
from trainers.init import init_table, init_weights
from trainers.model import Transformer, describe
from trainers.schema import to_dict


def inspect_run(run_file: str | None, overrides: Iterable[str]) -> dict[str, Any]:
    """The resolved config, counts, FLOPs and one init-table row per parameter tensor.

    The model is built and initialized exactly as ``train`` would (same seed, same generator),
    so ``measured_std`` is the std of the weights a run starts from.
    """
    resolved = resolve(load_run_config(run_file, overrides))
    model = Transformer(resolved.arch)
    plans = init_weights(model, resolved.config.init, torch.Generator().manual_seed(resolved.config.seed))
    return {
        **resolved.summary(),
        "architecture": describe(resolved.arch),
        "config": to_dict(resolved.config),
        "init": init_table(model, plans),
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"run id        {report['run_id']}",
        f"model         {report['architecture']}",
        f"training      {report['tokens']:,} tokens in {report['steps']:,} steps, "
        f"{report['train_flops']:.3g} FLOPs (6·N·D)",
        f"FLOPs/token   {report['flops_per_token_6n']:,} (6N), {report['flops_per_token']:,} (all matmuls + attention)",
        "",
        f"{'parameter':<34} {'shape':<14} {'fan_in':>7} {'scheme':<8} {'γ':>5} {'resid':>6} "
        f"{'target std':>11} {'measured':>11}",
    ]
    for row in report["init"]:
        fan_in = "" if row["fan_in"] is None else str(row["fan_in"])
        gamma = "" if row["gamma"] is None else f"{row['gamma']:g}"
        residual = f"{row['residual_factor']:.3g}" if row["residual_factor"] != 1.0 else ""
        shape = "×".join(str(d) for d in row["shape"])
        lines.append(
            f"{row['name']:<34} {shape:<14} {fan_in:>7} {row['scheme']:<8} {gamma:>5} {residual:>6} "
            f"{row['target_std']:>11.4g} {row['measured_std']:>11.4g}"
        )
    return "\n".join(lines)
