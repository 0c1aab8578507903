"""The project's own exceptions: user-facing problems, reported in one line."""


class ConfigError(ValueError):
    """A run config is invalid. The message names the dotted key, e.g. ``init.gamma: must be > 0, got -1``."""


class TrainingError(RuntimeError):
    """A run could not be carried out (not a divergence: that is a normal outcome with status ``diverged``)."""
