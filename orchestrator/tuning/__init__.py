"""``gammaray tune``: ``space`` (the ``tune:`` section and parameter syntax), ``plan`` (a grid into
studies and trials), ``studies`` (Optuna storage, samplers, pruners), ``driver`` (ask, run on Ray,
tail and prune, tell) and ``results`` (best values, size rules, ``best.yaml``)."""
