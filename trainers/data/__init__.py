"""Deterministic token sources: a built-in corpus with scaling structure, the composite task, files.

``build_source(config, seq_len, seed)`` gives a ``TokenSource``; ``docs/data.md`` describes the
generative process, the vocabulary layout and the split rules.
"""

from __future__ import annotations

import functools

from trainers.data.composite import Composite
from trainers.data.config import CompositeConfig, DataConfig, SyntheticConfig
from trainers.data.files import FileSource, open_memmap, open_text, write_memmap
from trainers.data.source import GeneratedSource, TokenSource
from trainers.data.synthetic import build_families
from trainers.data.vocab import ROLE_KIND, Role
from trainers.errors import ConfigError

__all__ = [
    "CompositeConfig",
    "DataConfig",
    "FileSource",
    "GeneratedSource",
    "ROLE_KIND",
    "Role",
    "SyntheticConfig",
    "TokenSource",
    "build_source",
    "source_entropy",
    "source_vocab_size",
    "write_memmap",
]


def build_source(config: DataConfig, seq_len: int, seed: int) -> TokenSource:
    """The token source ``config`` describes, for rows of ``seq_len + 1`` tokens.

    Raises ``ConfigError`` naming the ``data.`` key for problems only found now (a missing or
    too short file, bad memmap metadata) as well as for an invalid ``config``.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    try:
        config.validate()
        return _build(config, seq_len, seed)
    except ConfigError as error:
        raise ConfigError(f"data.{error}") from None


def source_vocab_size(config: DataConfig, seq_len: int, seed: int) -> int:
    """The vocabulary of the source ``config`` describes, without generating a corpus.

    Cheap enough to call for every point of a grid: a generated source's vocabulary is in its
    config (whose ranges were checked when it was built); a file source is opened, which also
    checks that the file exists, is long enough and has valid metadata.
    """
    if config.source in ("text", "memmap"):
        return build_source(config, seq_len, seed).vocab_size
    return config.synthetic.vocab_size


@functools.lru_cache(maxsize=32)
def source_entropy(config: DataConfig) -> float | None:
    """The entropy rate, in nats per token, of the corpus ``config`` generates: the loss of a
    model that knows every fixed table, the known floor of the eval loss (see
    ``GeneratedSource.entropy_per_token``). None for file sources, which do not know theirs.
    Cached: every point of a grid asks, and most share one data config."""
    if config.source in ("text", "memmap"):
        return None
    source = build_source(config, seq_len=1, seed=0)
    assert isinstance(source, GeneratedSource)
    return source.entropy_per_token


def _build(config: DataConfig, seq_len: int, seed: int) -> TokenSource:
    if config.source == "text":
        assert config.path is not None  # validate() refuses text without a path
        return open_text(config.path, seq_len, seed, config.eval_sequences, config.eval_fraction)
    if config.source == "memmap":
        assert config.path is not None
        return open_memmap(config.path, seq_len, seed, config.eval_sequences, config.eval_fraction)
    synthetic = config.synthetic
    composite = Composite(config.composite.noise_tokens)
    if config.source == "composite":
        families, weights = [composite], [1.0]
    else:
        families, weights = build_families(synthetic)
        total = sum(weights)
        weights = [w / total * (1.0 - config.composite_fraction) for w in weights]
        families, weights = [*families, composite], [*weights, config.composite_fraction]
    return GeneratedSource(families, weights, synthetic.vocab_size, seq_len, seed, config.eval_sequences)
