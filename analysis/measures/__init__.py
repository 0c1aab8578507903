"""Statistics of the trainer's eval-time measurements, beside the loss.

- ``mechanism``: final values, paired token-level gains and condensation curves per group.
- ``critical_gamma``: loss, probe and stability against γ; the best γ with its uncertainty.
- ``phase_diagram``: the composite task's held-out answers over γ × depth, competent runs only.
"""
