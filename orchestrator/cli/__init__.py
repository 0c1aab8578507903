"""The command line: ``main`` (the ``gammaray`` group), ``trainer`` (``train``, ``inspect``), the
grid commands (``commands``), ``tune`` and their shared pieces (``support``: errors, JSON,
options; ``tables``: the dry-run and status tables)."""
