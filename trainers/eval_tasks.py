"""Offline lm-evaluation-harness tasks built from gammaray's own corpora.

Each task is a multiple-choice task over a local JSONL file (``context``, ``choices``,
``target``), scored by the harness's log-likelihood ``acc``; its YAML and data are written for
one run, because prompts depend on the run's data config (noise length, vocabulary, world).
Prompts are fixed (seeded), so every run of a grid answers the same questions.

- ``gammaray_composite_seen``: the composite task's 15 trained pairs (11 keys each); choices are
  the key plus every shift the training labels use, the target the training label. Chance is
  1 in 10.
- ``gammaray_composite_heldout``: the held-out pair (3, 4) for every key; choices are the
  composition (x − 10, target) and the mirror pair's memorized label (x − 6). ``acc`` is the
  share of keys answered by composing rather than by memorizing (chance 1/2).
- ``gammaray_facts``: the ``FACTS_ASKED`` most frequent facts of the synthetic corpus, each asked
  as ``<fact> k1 k2``; choices are its value and three other values of the table (chance 1/4).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trainers.config import ResolvedRun
from trainers.data import composite, vocab
from trainers.data.synthetic import build_families
from trainers.export import encode_words
from trainers.reasoning_probe import build_prompts, has_composite_task

FACTS_ASKED = 256
FACT_CHOICES = 4
TASK_SEED = 0

Doc = dict[str, object]


def _composite_seen(run: ResolvedRun) -> list[Doc]:
    prompts = build_prompts(run.config.data.composite.noise_tokens, run.config.train.seq_len)
    assert prompts is not None  # applies() checked
    shifts = sorted({composite.trained_shift(p) for p in composite.SEEN_PAIRS})
    docs = []
    for row, label in zip(prompts.seen_tokens, prompts.seen_labels, strict=True):
        key = int(row[-3]) - composite.number_token(0)
        choices = [int(composite.number_token(key + s)) for s in shifts]
        docs.append(_doc(run, row, choices, choices.index(int(label))))
    return docs


def _composite_heldout(run: ResolvedRun) -> list[Doc]:
    prompts = build_prompts(run.config.data.composite.noise_tokens, run.config.train.seq_len)
    assert prompts is not None
    rows = zip(prompts.heldout_tokens, prompts.compositional, prompts.mirrored, strict=True)
    return [_doc(run, row, [int(c), int(m)], 0) for row, c, m in rows]


def _facts(run: ResolvedRun) -> list[Doc]:
    facts = build_families(run.config.data.synthetic)[0][0]
    asked = min(FACTS_ASKED, len(facts.value))  # ranks 0.. are the most frequent facts
    rng = np.random.default_rng(TASK_SEED)
    docs = []
    for rank in range(asked):
        value = int(facts.value[rank])
        others = np.setdiff1d(np.unique(facts.value), [value])
        choices = [value, *(int(v) for v in rng.choice(others, FACT_CHOICES - 1, replace=False))]
        order = rng.permutation(FACT_CHOICES)
        shuffled = [choices[i] for i in order]
        prompt = np.array([vocab.FACT, facts.key1[rank], facts.key2[rank]])
        docs.append(_doc(run, prompt, shuffled, shuffled.index(value)))
    return docs


def _doc(run: ResolvedRun, prompt: np.ndarray, choices: list[int], target: int) -> Doc:
    vocab_size = run.arch.vocab_size
    return {
        "context": encode_words(prompt, vocab_size),
        "choices": [encode_words([c], vocab_size) for c in choices],
        "target": target,
    }


def _has_facts(run: ResolvedRun) -> bool:
    data = run.config.data
    return data.source == "synthetic" and data.synthetic.facts_weight > 0 and data.composite_fraction < 1


def _fits_composite(run: ResolvedRun) -> bool:
    data = run.config.data
    return (
        has_composite_task(data)
        and build_prompts(data.composite.noise_tokens, run.config.train.seq_len) is not None
    )


# name → (does it apply to a run, its documents)
TASKS: dict[str, tuple[Callable[[ResolvedRun], bool], Callable[[ResolvedRun], list[Doc]]]] = {
    "gammaray_composite_seen": (_fits_composite, _composite_seen),
    "gammaray_composite_heldout": (_fits_composite, _composite_heldout),
    "gammaray_facts": (_has_facts, _facts),
}


def chance(name: str, run: ResolvedRun) -> float:
    """The accuracy of guessing on task ``name``: the mean of 1 / (number of choices)."""
    docs = TASKS[name][1](run)
    return float(np.mean([1 / len(doc["choices"]) for doc in docs]))


def applicable_tasks(run: ResolvedRun) -> list[str]:
    """The shipped tasks that the run's data can ask."""
    return [name for name, (applies, _) in TASKS.items() if applies(run)]


def write_task(run: ResolvedRun, name: str, folder: Path) -> Path:
    """Write task ``name`` for ``run`` (its YAML and JSONL) into ``folder``; returns the YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = TASKS[name][1](run)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    spec = folder / f"{name}.yaml"
    spec.write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data.resolve()))}\n"
        # The datasets library's cache of the file goes beside it, not into the user's home.
        f"  cache_dir: {json.dumps(str((folder / 'cache').resolve()))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{target}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return spec
