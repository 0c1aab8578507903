"""Fitting scaling laws and comparing settings: the numbers behind every verdict.

- ``objective``: the grouped Huber objective in log space, its gradient and the optimizer layout.
- ``fit``: the power-law forms and the robust multistart fitter (:class:`~analysis.fitting.fit.FitResult`).
- ``batched``: all bootstrap refits of one law at once (vectorized Levenberg–Marquardt).
- ``shared``: groups fitted jointly with one E (shared, known or per group) and their paired bootstrap.
- ``bootstrap``: resampling runs for percentile intervals.
- ``slices``: runs that share (nearly) the same D, N or FLOPs.
- ``isoflop``: Chinchilla's approach 2 (compute-optimal N and D from iso-FLOP slices).
- ``gap``: the model-free paired loss gap per cell and its trend with scale.
- ``holdout``: refits without the largest runs, predicting them.
- ``compare``: exponents side by side, differences, effective-compute multipliers.
- ``verdict``: which setting descends faster, from the exponents and the gap trend.
"""
