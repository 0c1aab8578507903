"""Load scaling-law runs, fit power laws per setting, compare them and build reports.

Modules, one job each:

- ``workspace``: where the embedded tracking store and reports live.
- ``load``: runs from the tracking store or a CSV file, as a tidy :class:`~analysis.load.RunTable`.
- ``fit``: pure model functions and the robust power-law fitter (typed :class:`~analysis.fit.FitResult`).
- ``batched``: all bootstrap refits of one law at once (vectorized Gauss–Newton).
- ``isoflop``: Chinchilla's approach 2 (compute-optimal N and D from iso-FLOP slices).
- ``bootstrap``: resampling runs for percentile confidence intervals.
- ``slices``: runs that share (nearly) the same D, N or FLOPs.
- ``analyze``: grouping, slicing and form selection over a run table.
- ``compare``: exponents side by side, differences, verdicts, effective-compute multipliers.
- ``labels``: plain-language labels and number formats.
- ``export``: ``fit.json`` / ``fits.csv`` and the ``--json`` document.
- ``figures`` and ``report``: the self-contained HTML report.
- ``synthetic``: seeded data with known parameters.
- ``cli``: the ``fit`` and ``report`` commands.

Nothing here imports torch or ray; MLflow is imported only when a grid is loaded.
"""
