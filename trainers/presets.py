"""The size ladder: what a model of size N looks like (layers, width, heads, MLP width).

How to *train* at a size (batch, learning rate, tokens) is not decided here: that belongs to the
run config and the grid. Names give the approximate non-embedding parameter count; the exact
count depends on the vocabulary only through the embedding, so it is exact here
(``tests/trainers/test_model.py`` checks every name against ``count_params``).

The CPU rungs train on a laptop in seconds to minutes. The cluster rungs follow the shapes of
the GPT-3 / Pythia families that the γ-initialization papers also use (~50M to ~2.4B).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int
    cluster: bool  # needs a GPU to train in reasonable time


PRESETS: dict[str, Preset] = {
    # CPU ladder: ~20k → ~5M non-embedding parameters.
    "tiny": Preset(n_layers=2, d_model=32, n_heads=2, d_ff=64, cluster=False),
    "100k": Preset(n_layers=2, d_model=64, n_heads=4, d_ff=160, cluster=False),
    "400k": Preset(n_layers=4, d_model=96, n_heads=4, d_ff=256, cluster=False),
    "1m": Preset(n_layers=4, d_model=128, n_heads=4, d_ff=448, cluster=False),
    "2m": Preset(n_layers=6, d_model=160, n_heads=4, d_ff=448, cluster=False),
    "5m": Preset(n_layers=8, d_model=224, n_heads=7, d_ff=576, cluster=False),
    # Cluster ladder: ~50M → ~2.4B.
    "50m": Preset(n_layers=10, d_model=640, n_heads=10, d_ff=1728, cluster=True),
    "125m": Preset(n_layers=12, d_model=960, n_heads=15, d_ff=2560, cluster=True),
    "350m": Preset(n_layers=24, d_model=1024, n_heads=16, d_ff=3072, cluster=True),
    "760m": Preset(n_layers=24, d_model=1536, n_heads=16, d_ff=4096, cluster=True),
    "1.3b": Preset(n_layers=24, d_model=2048, n_heads=16, d_ff=5504, cluster=True),
    "2.4b": Preset(n_layers=30, d_model=2560, n_heads=20, d_ff=6912, cluster=True),
}


def nominal_params(name: str) -> float:
    """The parameter count a preset's name states: "400k" → 4e5, "1.3b" → 1.3e9 ("tiny" → 2e4)."""
    if name == "tiny":
        return 2e4
    scale = {"k": 1e3, "m": 1e6, "b": 1e9}[name[-1]]
    return float(name[:-1]) * scale
