"""The HTML reports and their figures.

- ``page``: the toolkit every page is built from (style, escaping, sections, tables, figures).
- ``figures``: the scaling figures (loss against N and D, exponents, gaps, hold-out, curves).
- ``scaling``: the scaling-law report of a grid (``gammaray report``) and its PNG export.
- ``measurements``: its sections of eval-time measurements (mechanism, tokens, probe, critical γ).
- ``tune``: the tuning report (``gammaray tune``).
"""
