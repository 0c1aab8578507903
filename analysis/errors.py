"""The analysis package's own exception for bad user input."""

from __future__ import annotations


class AnalysisError(ValueError):
    """Bad input to an analysis command: a missing column, an unreadable file, an unknown grid.

    The message is one line that names the offending field or file; the CLI prints it as
    ``gammaray: error: <message>`` and exits with status 2.
    """


# A note that can change a conclusion (a parameter at a bound, an interval built on too few
# resamples) starts with this; the command line shows such notes even when it hides the rest.
WARNING_PREFIX = "warning: "


def warning(text: str) -> str:
    """``text`` marked as a note that can change a conclusion."""
    return WARNING_PREFIX + text


def is_warning(message: str) -> bool:
    """Whether a note is marked as able to change a conclusion (see :func:`warning`)."""
    return WARNING_PREFIX in message
