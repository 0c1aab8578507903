"""The orchestrator's own exceptions."""

from __future__ import annotations

from trainers.errors import ConfigError


class GridError(ConfigError):
    """A grid file (or its ``--set`` overrides, or its resources on this cluster) is invalid.

    The message is one line naming the file, the key and the index, e.g.
    ``grids/x.yaml: axes.init.gamma[2]: must be > 0, got -1``. The CLI prints it and exits 2.
    """


class TrackingError(GridError):
    """The tracking store cannot answer a question the user asked (unknown grid, unreachable store)."""
