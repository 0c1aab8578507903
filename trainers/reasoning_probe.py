"""The composite-task reasoning probe (``probe/``): does the model compose anchors or memorize pairs?

After Zhang et al., "Initialization is Critical to Whether Transformers Fit Composite Functions
by Reasoning or Memorizing" (NeurIPS 2024); the task and its prompts are
``trainers.data.composite``. A prompt ``[P] noise.. x a b`` stops before the label; the model's
answer is the arg-max token (over the whole vocabulary) at the last position. The held-out pair
is asked for every key x (20..100), each trained pair for every ``SEEN_KEY_STRIDE``-th key (a
fixed subset: the probe runs at every eval and should cost little); noise is drawn from a fixed
seed, so every run and every eval sees the same prompts.

- ``probe/seen_accuracy``: the share of prompts of the 15 trained pairs answered with their
  training label (for the non-compositional pair (4, 3) that is x − 6, not its composition).
- ``probe/heldout_compositional``: on the held-out pair (3, 4), the share answered with the
  composition x + s_3 + s_4 = x − 10: the model inferred the pair from its anchors (reasoning).
- ``probe/heldout_mirrored``: the share answered x − 6, the label of the mirror pair (4, 3): the
  model treats the pair as unordered and recalls a memorized answer.

The two held-out shares sum to at most 1; the rest is any other answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from trainers.data import DataConfig, composite

if TYPE_CHECKING:
    from trainers.config import ResolvedRun
    from trainers.diagnostics import EvalSchedule

PROMPT_SEED = 0  # fixed: the same prompts for every run of a grid
SEEN_KEY_STRIDE = 8  # trained pairs are asked for keys 20, 28, .., 100 (11 per pair, 165 prompts)


def has_composite_task(data: DataConfig) -> bool:
    """Whether a run's data holds the composite task."""
    return data.source == "composite" or (data.source == "synthetic" and data.composite_fraction > 0)


@dataclass(frozen=True)
class ProbePrompts:
    """The probe's prompts, all of one length, with the answers that score them."""

    seen_tokens: np.ndarray  # (n_seen, L) prompts of the trained pairs
    seen_labels: np.ndarray  # (n_seen,) token id of each one's training label
    heldout_tokens: np.ndarray  # (n_heldout, L) prompts of the held-out pair
    compositional: np.ndarray  # (n_heldout,) token id of x + s_a + s_b
    mirrored: np.ndarray  # (n_heldout,) token id of x + the mirror pair's trained shift


def build_prompts(noise_tokens: int, max_len: int, seed: int = PROMPT_SEED) -> ProbePrompts | None:
    """The probe's prompts, or None when one is longer than ``max_len`` (the model's sequence
    length) tokens."""
    if 4 + noise_tokens > max_len:
        return None
    seen_keys = np.arange(composite.KEY_MIN, composite.KEY_MAX + 1, SEEN_KEY_STRIDE)
    seen = [
        composite.build_probe(pair, keys=seen_keys, noise_tokens=noise_tokens, seed=seed + i)
        for i, pair in enumerate(composite.SEEN_PAIRS)
    ]
    held = composite.build_probe(composite.HELD_OUT_PAIR, noise_tokens=noise_tokens, seed=seed + len(seen))
    return ProbePrompts(
        seen_tokens=np.concatenate([p.tokens for p in seen]),
        # For a trained pair, the mirrored shift is its own training label (composite.mirrored_shift).
        seen_labels=np.concatenate([p.mirrored for p in seen]),
        heldout_tokens=held.tokens,
        compositional=held.compositional,
        mirrored=held.mirrored,
    )


def score(
    predicted: np.ndarray,
    seen_labels: np.ndarray,
    heldout_predicted: np.ndarray,
    compositional: np.ndarray,
    mirrored: np.ndarray,
) -> dict[str, float]:
    """The ``probe/`` metrics from predicted token ids of the seen and held-out prompts."""
    return {
        "probe/seen_accuracy": float(np.mean(predicted == seen_labels)),
        "probe/heldout_compositional": float(np.mean(heldout_predicted == compositional)),
        "probe/heldout_mirrored": float(np.mean(heldout_predicted == mirrored)),
    }


@torch.no_grad()
def last_token_predictions(model: nn.Module, prompts: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The arg-max next token after each prompt (n, L) → (n,)."""
    device = next(model.parameters()).device
    tokens = torch.from_numpy(prompts)
    out = [model(chunk.to(device))[:, -1].argmax(-1).cpu() for chunk in tokens.split(batch_size)]
    return torch.cat(out).numpy()


class ReasoningProbe:
    """The ``probe/`` probe of a run whose data holds the composite task."""

    def __init__(self, prompts: ProbePrompts, mode: str, schedule: EvalSchedule) -> None:
        self.prompts = prompts
        self.mode = mode  # "every" (at the diag evals) or "final"
        self.schedule = schedule

    @classmethod
    def for_run(cls, run: ResolvedRun, schedule: EvalSchedule) -> ReasoningProbe | None:
        prompts = build_prompts(run.config.data.composite.noise_tokens, run.config.train.seq_len)
        return None if prompts is None else cls(prompts, run.config.diag.probe, schedule)

    def measure(self, model: nn.Module, step: int, final: bool) -> dict[str, float]:
        due = final if self.mode == "final" else self.schedule.due(step, final)
        if not due:
            return {}
        p = self.prompts
        both = last_token_predictions(model, np.concatenate([p.seen_tokens, p.heldout_tokens]))
        n_seen = len(p.seen_tokens)
        return score(both[:n_seen], p.seen_labels, both[n_seen:], p.compositional, p.mirrored)
