"""The data section of a run config (keys ``data.<field>``, ``data.synthetic.<field>``, ...).

Range checks here see only the config; problems that need the file system or the sequence length
(a missing file, a file too short for ``seq_len``) are found by ``build_source``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trainers.data import vocab
from trainers.errors import ConfigError

# The composite task writes numbers up to 110 (key 100 + shift 5 + shift 5) as content tokens.
_MIN_VOCAB = vocab.CONTENT + 112


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in corpus: its fixed "world" (tables) and the mixture of segment families.

    The ``*_weight`` fields are relative shares of segments among the non-composite families
    (normalized to sum to 1); ``DataConfig.composite_fraction`` takes its share off the top.
    """

    vocab_size: int = 512  # ids: 16 reserved, the rest content symbols
    world_seed: int = 0  # draws the fact table, rule steps and Markov chain; not the run seed
    facts_weight: float = 0.5
    rules_weight: float = 0.15
    copy_weight: float = 0.1
    markov_weight: float = 0.25
    n_facts: int = 65536  # size of the key → value table
    zipf_exponent: float = 1.1  # fact of rank i (1-based) drawn with probability ∝ i^-zipf_exponent
    facts_per_segment: int = 4  # (key, key, value) triples after the marker
    n_rules: int = 256  # progression rules, each with a fixed step
    rule_modulus: int = 64  # largest progression modulus C (rules use C, C/2, C/4, C/8)
    rule_length: int = 10  # terms per progression
    copy_length: int = 8  # tokens in a copy span (the segment holds it twice)
    markov_branching: int = 4  # successors per symbol in the background Markov chain
    markov_length: int = 15  # background tokens per segment

    def validate(self) -> None:
        n_content = vocab.n_content(self.vocab_size)
        _at_least("vocab_size", self.vocab_size, _MIN_VOCAB)
        _at_most("vocab_size", self.vocab_size, 8192)  # the Markov table costs O(vocab_size^2) to draw
        _at_least("world_seed", self.world_seed, 0)
        weights = {
            "facts_weight": self.facts_weight,
            "rules_weight": self.rules_weight,
            "copy_weight": self.copy_weight,
            "markov_weight": self.markov_weight,
        }
        for key, weight in weights.items():
            _at_least(key, weight, 0.0)
        if sum(weights.values()) <= 0:
            raise ConfigError("facts_weight: the family weights must not all be 0")
        _at_least("n_facts", self.n_facts, 1)
        # Keys are distinct symbol pairs; past half of all pairs, drawing them gets pointless.
        _at_most("n_facts", self.n_facts, n_content * n_content // 2, "(vocab_size - 16)^2 / 2")
        _at_most("n_facts", self.n_facts, 1 << 22)  # the table's memory
        _at_least("zipf_exponent", self.zipf_exponent, 0.0)
        _at_most("zipf_exponent", self.zipf_exponent, 4.0)
        _at_least("facts_per_segment", self.facts_per_segment, 1)
        _at_least("n_rules", self.n_rules, 1)
        _at_most("n_rules", self.n_rules, n_content, "vocab_size - 16")
        _at_least("rule_modulus", self.rule_modulus, 2)
        # The graded moduli C, C/2, C/4, C/8 take disjoint symbol ranges, < 2C symbols in all.
        _at_most("rule_modulus", self.rule_modulus, n_content // 2, "(vocab_size - 16) / 2")
        _at_least("rule_length", self.rule_length, 2)
        _at_least("copy_length", self.copy_length, 1)
        _at_least("markov_branching", self.markov_branching, 1)
        _at_most("markov_branching", self.markov_branching, n_content, "vocab_size - 16")
        _at_least("markov_length", self.markov_length, 1)


@dataclass(frozen=True)
class CompositeConfig:
    """The anchor-function composite task (see ``trainers.data.composite``)."""

    noise_tokens: int = 2  # random key-range tokens between the "[P]" marker and the key

    def validate(self) -> None:
        _at_least("noise_tokens", self.noise_tokens, 0)
        _at_most("noise_tokens", self.noise_tokens, 64)


@dataclass(frozen=True)
class DataConfig:
    """Where a run's tokens come from.

    ``synthetic`` and ``composite`` are generated (nothing is read); ``text`` reads any file as
    bytes (vocabulary 256); ``memmap`` reads a pretokenized ``.bin`` file with a metadata file
    ``<path>.json`` beside it (see ``trainers.data.files``).
    """

    source: Literal["synthetic", "composite", "text", "memmap"] = "synthetic"
    path: str | None = None  # file for text / memmap; required for them, refused for others
    eval_sequences: int = 128  # size of the fixed held-out eval set, in sequences
    eval_fraction: float = 0.1  # text/memmap: share of the file's tokens held out (at its end)
    composite_fraction: float = 0.0  # synthetic: share of segments from the composite task
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    composite: CompositeConfig = field(default_factory=CompositeConfig)

    def validate(self) -> None:
        uses_file = self.source in ("text", "memmap")
        if uses_file and not self.path:
            raise ConfigError(f"path: required for source {self.source!r}")
        if not uses_file and self.path is not None:
            raise ConfigError(
                f"path: only sources 'text' and 'memmap' read a file; "
                f"got {self.path!r} with source {self.source!r}"
            )
        _at_least("eval_sequences", self.eval_sequences, 1)
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction: must be in (0, 1), got {self.eval_fraction!r}")
        if not 0.0 <= self.composite_fraction <= 1.0:
            raise ConfigError(f"composite_fraction: must be in [0, 1], got {self.composite_fraction!r}")
        if self.composite_fraction > 0 and self.source != "synthetic":
            raise ConfigError(
                f"composite_fraction: only source 'synthetic' mixes in the composite task; "
                f"got {self.composite_fraction!r} with source {self.source!r}"
            )
        for name in ("synthetic", "composite"):
            try:
                getattr(self, name).validate()
            except ConfigError as error:
                raise ConfigError(f"{name}.{error}") from None


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{key}: must be >= {low}, got {value!r}")


def _at_most(key: str, value: float, high: float, meaning: str = "") -> None:
    if value > high:
        bound = f"{meaning} = {high}" if meaning else f"{high}"
        raise ConfigError(f"{key}: must be <= {bound}, got {value!r}")
