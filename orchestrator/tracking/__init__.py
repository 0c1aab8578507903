"""What a grid's runs did, in MLflow: ``store`` (the tracking store and its tags), ``recorder``
(the driver's writes as runs progress), ``replay`` (a run's metrics file, read incrementally)
and ``status`` (a grid's state, for ``gammaray status`` and ``cancel``)."""
