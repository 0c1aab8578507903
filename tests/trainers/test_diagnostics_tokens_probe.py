"""tokens/ buckets and probe/ scoring on constructed inputs, and the probes end to end in a tiny run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trainers.callbacks import JsonlLogger, read_jsonl
from trainers.config import load_run_config
from trainers.data import Role, composite
from trainers.diagnostics import EvalSchedule
from trainers.loop import train
from trainers.reasoning_probe import ReasoningProbe, build_prompts, score
from trainers.token_buckets import (
    CONTEXT,
    OTHER,
    TRIVIAL,
    BigramCounts,
    bucket_ids,
    bucket_metrics,
    context_roles,
    induction_targets,
    trivial_targets,
)

FAST = [
    "model.preset=tiny",
    "train.batch_size=8",
    "train.seq_len=32",
    "train.threads=1",
    "data.eval_sequences=16",
]


# ---- token buckets ------------------------------------------------------------------------------


def test_bigram_probabilities_are_counts_over_the_previous_token():
    rows = np.array([[1, 2, 1, 2, 1, 3], [1, 2, 0, 0, 0, 0]])
    bigram = BigramCounts([rows[:1], rows[1:]], vocab_size=4)
    # Pairs: (1,2)×3, (2,1)×2, (1,3)×1, (2,0)×1, (0,0)×3.
    assert bigram.previous_counts.tolist() == [3, 4, 3, 0]
    np.testing.assert_allclose(
        bigram.probability(np.array([1, 1, 2, 3]), np.array([2, 3, 1, 0])), [0.75, 0.25, 2 / 3, 0.0]
    )


def test_trivial_needs_a_confident_bigram_seen_often_enough():
    train_rows = np.array([[5, 6] * 10 + [7, 8]])  # 5 → 6 always (10×); 7 → 8 once
    bigram = BigramCounts([train_rows], vocab_size=10)
    eval_rows = np.array([[5, 6, 7, 8, 5, 9]])
    np.testing.assert_array_equal(
        trivial_targets(eval_rows, bigram, 0.5), [[True, False, False, False, False]]
    )
    # 6 → 5 has p = 9/10, 7 → 8 has p = 1 but 7 was seen once: not trustworthy; 5 → 9 never seen.


def test_induction_targets_are_repeats_of_an_earlier_pair_in_the_same_row():
    rows = np.array([[1, 2, 3, 1, 2, 4, 1, 2], [7, 7, 7, 7, 2, 1, 2, 3]])
    # Row 0 targets: (1,2) (2,3) (3,1) (1,2)* (2,4) (4,1) (1,2)*; row 1: (7,7) (7,7)* (7,7)* (7,2) (2,1) (1,2) (2,3).
    expected = [
        [False, False, False, True, False, False, True],
        [False, True, True, False, False, False, False],
    ]
    np.testing.assert_array_equal(induction_targets(rows), expected)


def test_context_roles_are_the_in_context_kinds():
    roles = np.array(
        [Role.COPY_REPEAT, Role.RULE_NEXT, Role.COMP_ANSWER, Role.TEXT, Role.FACT_VALUE, Role.COPY_SPAN]
    )
    assert context_roles(roles).tolist() == [True, True, True, False, False, False]


def test_bucket_ids_put_trivial_before_context():
    trivial = np.array([True, True, False, False])
    context = np.array([True, False, True, False])
    assert bucket_ids(trivial, context).tolist() == [TRIVIAL, TRIVIAL, CONTEXT, OTHER]


def test_bucket_metrics_on_a_constructed_sequence():
    losses = np.array([[0.5, 1.5, 4.0, 2.0], [3.0, 1.0, 1.0, 1.0]])
    buckets = np.array([[TRIVIAL, TRIVIAL, CONTEXT, OTHER], [CONTEXT, OTHER, OTHER, OTHER]])
    roles = np.full((2, 4), int(Role.TEXT))
    roles[0, 2] = roles[1, 0] = int(Role.COPY_REPEAT)
    metrics = bucket_metrics(losses, buckets, roles)
    assert metrics["tokens/loss/trivial"] == pytest.approx(1.0) and metrics["tokens/count/trivial"] == 2
    assert metrics["tokens/loss/context"] == pytest.approx(3.5) and metrics["tokens/count/context"] == 2
    assert metrics["tokens/loss/other"] == pytest.approx(1.25) and metrics["tokens/count/other"] == 4
    assert metrics["tokens/loss/copy_repeat"] == pytest.approx(3.5)
    assert metrics["tokens/count/text"] == 6
    empty = bucket_metrics(losses, np.full((2, 4), OTHER))
    assert empty["tokens/count/trivial"] == 0 and "tokens/loss/trivial" not in empty


# ---- reasoning probe ----------------------------------------------------------------------------


def test_probe_scores_on_constructed_predictions():
    metrics = score(
        np.array([1, 2, 3, 4]),
        np.array([1, 2, 0, 4]),
        np.array([10, 11, 12, 13, 14]),
        np.array([10, 11, 0, 0, 0]),
        np.array([0, 0, 12, 13, 0]),
    )
    assert metrics == {
        "probe/seen_accuracy": 0.75,
        "probe/heldout_compositional": 0.4,
        "probe/heldout_mirrored": 0.4,
    }


def test_probe_prompts_carry_the_trained_compositional_and_mirrored_answers():
    prompts = build_prompts(noise_tokens=2, max_len=32)
    assert prompts.seen_tokens.shape == (15 * 11, 6) and prompts.heldout_tokens.shape == (81, 6)
    keys = prompts.heldout_tokens[:, -3] - 16
    np.testing.assert_array_equal(prompts.compositional - 16, keys - 10)  # x + s_3 + s_4 = x − 2 − 8
    np.testing.assert_array_equal(prompts.mirrored - 16, keys - 6)  # the label of (4, 3)
    seen_pair_43 = (prompts.seen_tokens[:, -2] == composite.ANCHOR_TOKENS[4]) & (
        prompts.seen_tokens[:, -1] == composite.ANCHOR_TOKENS[3]
    )
    np.testing.assert_array_equal(
        prompts.seen_labels[seen_pair_43] - prompts.seen_tokens[seen_pair_43, -3], [-6] * 11
    )
    assert build_prompts(noise_tokens=40, max_len=32) is None


class Oracle(nn.Module):
    """Answers every composite prompt by composing its anchors (or, with ``mirror``, by the
    label of the unordered pair): a stand-in for a model that reasons (or memorizes)."""

    def __init__(self, mirror: bool):
        super().__init__()
        self.mirror = mirror
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the probe a device to read

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        shift_of = {t: s for a, t in composite.ANCHOR_TOKENS.items() for s in [composite.ANCHOR_SHIFTS[a]]}
        answers = []
        for row in tokens.tolist():
            pair = tuple(next(a for a, t in composite.ANCHOR_TOKENS.items() if t == tok) for tok in row[-2:])
            shift = composite.mirrored_shift(pair) if self.mirror else shift_of[row[-2]] + shift_of[row[-1]]
            answers.append(row[-3] + shift)
        logits = torch.zeros(tokens.shape[0], tokens.shape[1], 512)
        logits[torch.arange(len(answers)), -1, torch.tensor(answers)] = 1.0
        return logits


def test_reasoning_probe_tells_composition_from_memorization():
    prompts = build_prompts(noise_tokens=2, max_len=32)
    probe = ReasoningProbe(prompts, "every", EvalSchedule(eval_every=1, every_evals=1))
    reasoner = probe.measure(Oracle(mirror=False), step=0, final=True)
    memorizer = probe.measure(Oracle(mirror=True), step=0, final=True)
    assert reasoner["probe/heldout_compositional"] == 1.0 and reasoner["probe/heldout_mirrored"] == 0.0
    assert memorizer["probe/heldout_compositional"] == 0.0 and memorizer["probe/heldout_mirrored"] == 1.0
    # Composition misses only the non-compositional trained pair (4, 3): 14 of 15 pairs.
    assert reasoner["probe/seen_accuracy"] == pytest.approx(14 / 15)
    assert memorizer["probe/seen_accuracy"] == 1.0


# ---- end to end ---------------------------------------------------------------------------------


def _evals(tmp_path, *overrides):
    out = tmp_path / "run"
    train(
        load_run_config(None, [*FAST, "train.tokens=4096", *overrides]),
        out,
        [JsonlLogger(out / "metrics.jsonl")],
    )
    return [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "eval"]


def _keys(record, prefix):
    return {k for k in record if k.startswith(prefix)}


def test_a_tiny_run_logs_diag_and_probe_every_eval_and_tokens_at_the_end(tmp_path):
    evals = _evals(tmp_path, "data.composite_fraction=0.2", "train.eval_every=4", "diag.bigram_tokens=20000")
    assert [r["step"] for r in evals] == [0, 4, 8, 12, 16]
    for record in evals:
        assert {
            "diag/condensation/all",
            "diag/effective_rank/blocks.0.attn",
            "diag/stable_rank/mlp",
            "diag/spectrum_top1/embed",
            "diag/spectrum_top5/embed",
            "diag/attn_sink/blocks.1.attn",
            "diag/attn_sink/all",
        } <= _keys(record, "diag/")
        assert _keys(record, "probe/") == {
            "probe/seen_accuracy",
            "probe/heldout_compositional",
            "probe/heldout_mirrored",
        }
        assert all(
            0.0 <= record[k] <= 1.0
            for k in _keys(record, "probe/") | {"diag/attn_sink/all", "diag/condensation/all"}
        )
    assert all(not _keys(r, "tokens/") for r in evals[:-1])
    final = evals[-1]
    assert {
        "tokens/loss/context",
        "tokens/count/context",
        "tokens/loss/other",
        "tokens/count/trivial",
        "tokens/loss/copy_repeat",
        "tokens/loss/comp_answer",
    } <= _keys(final, "tokens/")
    counted = sum(final[f"tokens/count/{b}"] for b in ("trivial", "context", "other"))
    assert counted == 16 * 32  # every target of the eval set, once


def test_a_text_run_buckets_by_induction_and_has_no_probe(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat. the dog sat on the log. " * 100)
    evals = _evals(
        tmp_path, "data.source=text", f"data.path={text}", "train.eval_every=8", "diag.every_evals=2"
    )
    assert [bool(_keys(r, "diag/")) for r in evals] == [True, False, True]  # steps 0, 8 and the final 16
    assert all(not _keys(r, "probe/") for r in evals)
    final = evals[-1]
    assert _keys(final, "tokens/") == {
        f"tokens/{m}/{b}" for m in ("loss", "count") for b in ("trivial", "context", "other")
    }
    assert final["tokens/count/context"] > 0 and final["tokens/count/trivial"] > 0


def test_diagnostics_off_logs_none(tmp_path):
    evals = _evals(tmp_path, "data.composite_fraction=0.2", "diag.enabled=false", "train.eval_every=8")
    assert all(set(r) == {"kind", "step", "eval/loss", "eval/tokens"} for r in evals)


def test_sparse_bigram_counts_for_large_vocabularies_equal_the_dense_table(monkeypatch):
    import trainers.token_buckets as token_buckets

    rows = np.random.default_rng(0).integers(0, 300, (50, 65))
    dense = BigramCounts([rows], 300)
    monkeypatch.setattr(token_buckets, "_DENSE_MAX", 0)
    sparse = BigramCounts([rows], 300)
    previous, following = np.random.default_rng(1).integers(0, 300, (2, 1000))
    np.testing.assert_array_equal(
        dense.pair_counts(previous, following), sparse.pair_counts(previous, following)
    )
    np.testing.assert_array_equal(sparse.probability(rows[:, :-1], rows[:, 1:]) > 0, True)
