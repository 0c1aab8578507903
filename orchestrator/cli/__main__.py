"""``python -m orchestrator.cli``: the ``gammaray`` command line."""

from orchestrator.cli.main import main

main()
