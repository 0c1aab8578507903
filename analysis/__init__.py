"""Load scaling-law runs, fit power laws per setting, compare them and build reports.

Modules, one job each:

- ``load``: runs from the tracking store or a CSV file, as a tidy :class:`~analysis.load.RunTable`.
- ``analyze``: grouping, slicing, form and E-mode selection over a run table → an ``Analysis``.
- ``fitting/``: the laws, their fits, bootstraps, gaps, hold-outs, comparisons and the verdict.
- ``measures/``: statistics of the eval-time measurements (mechanism, critical γ, phase diagram).
- ``summary``: the sentences a report and ``gammaray fit`` lead with.
- ``export``: ``fit.json`` / ``fits.csv`` and the ``--json`` document.
- ``report/``: the HTML pages and their figures.
- ``labels``: plain-language labels and number formats.
- ``tune_rule``: per-size rules fitted to tuned values (``lr(N) = a·N^b``).
- ``synthetic``: seeded data with known parameters.
- ``errors``: the analysis's error and warning types.
- ``cli``: the ``fit`` and ``report`` commands.

Nothing here imports torch or ray; MLflow is imported only when a grid is loaded.
"""
