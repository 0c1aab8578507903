"""Measurements of the model taken at eval time: diagnostics, token-level losses, reasoning probes.

A probe looks at the model between optimizer steps and returns metrics, which join the eval
record (``on_eval``) under their own namespaces (``diag/``, ``tokens/``, ``probe/``). Probes run
on the main process, on the bare model, with gradients off and the model in eval mode.
What each one measures, and when, is set by the run config's ``diag`` section
(``trainers.diagnostics.DiagConfig``; ``docs/diagnostics.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from trainers.data import TokenSource
from trainers.diagnostics import EvalSchedule, WeightDiagnostics
from trainers.reasoning_probe import ReasoningProbe, has_composite_task
from trainers.token_buckets import TokenLosses

if TYPE_CHECKING:
    from trainers.config import ResolvedRun


class Probe(Protocol):
    def measure(self, model: nn.Module, step: int, final: bool) -> dict[str, float]:
        """Metrics of ``model`` as it is after ``step`` steps; ``final`` at the run's last eval."""


def build_probes(run: ResolvedRun, source: TokenSource) -> list[Probe]:
    """The probes a run's config asks for: ``diag/`` always (when ``diag.enabled``), ``tokens/``
    unless ``diag.tokens`` is off, ``probe/`` when the data holds the composite task."""
    diag = run.config.diag
    if not diag.enabled:
        return []
    schedule = EvalSchedule(eval_every=run.eval_every, every_evals=run.config.diag.every_evals)
    probes: list[Probe] = []
    sink_tokens = None
    if diag.sink_sequences and source.seq_len >= 2:
        sink_tokens = torch.from_numpy(source.eval_batch()[: diag.sink_sequences, :-1])
    probes.append(WeightDiagnostics(diag, schedule, sink_tokens))
    if diag.tokens != "off":
        probes.append(TokenLosses(run, source, schedule))
    if diag.probe != "off" and has_composite_task(run.config.data):
        reasoning = ReasoningProbe.for_run(run, schedule)
        if reasoning is not None:
            probes.append(reasoning)
    return probes
