"""Measurements of the model taken at eval time: diagnostics, token-level losses, reasoning probes.

A probe looks at the model between optimizer steps and returns metrics, which join the eval
record (``on_eval``) under their own namespaces (``diag/``, ``tokens/``, ``probe/``). Probes run
on the main process, on the bare model, with gradients off and the model in eval mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from torch import nn

if TYPE_CHECKING:
    from trainers.config import ResolvedRun
    from trainers.data import TokenSource


class Probe(Protocol):
    def measure(self, model: nn.Module, step: int, final: bool) -> dict[str, float]:
        """Metrics of ``model`` as it is after ``step`` steps; ``final`` at the run's last eval."""


def build_probes(run: ResolvedRun, source: TokenSource) -> list[Probe]:
    """The probes a run's config asks for."""
    return []
