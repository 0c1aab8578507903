"""The command line: ``main`` (the ``gammaray`` group and the trainer's commands), the grid
commands (``commands``), ``tune`` and their shared pieces (``support``: errors, JSON, options;
``tables``: the dry-run and status tables)."""
