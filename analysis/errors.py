"""The analysis package's own exception for bad user input."""

from __future__ import annotations


class AnalysisError(ValueError):
    """Bad input to an analysis command: a missing column, an unreadable file, an unknown grid.

    The message is one line that names the offending field or file; the CLI prints it as
    ``gammaray: error: <message>`` and exits with status 2.
    """
