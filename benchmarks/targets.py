"""The targets the headline figures are measured against: figure → (bound, sense), where the
sense is "max" when the figure must stay at or below the bound and "min" when at or above it.

``run.py`` checks them and ``results_md.py`` prints them beside the measured values.
"""

TARGETS = {
    "trainer_vs_plain": (0.95, "min"),
    "cpu_mfu": (0.50, "min"),  # eager, at 1m
    "cpu_mfu_compiled": (0.70, "min"),  # train.compile=true, at 1m
    "orchestration_makespan_ratio": (1.05, "max"),  # the median of three grids
    "bootstrap_1000_s": (30.0, "max"),
    "diagnostics_overhead": (0.05, "max"),
    "scale_dry_run_10000_s": (10.0, "max"),
    "scale_status_1000_s": (3.0, "max"),
    "scale_report_1000_s": (60.0, "max"),
}
