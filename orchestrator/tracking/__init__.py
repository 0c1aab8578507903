"""What a grid's runs did, in MLflow: ``store`` (the tracking store and its tags), ``sql_log``
(a batch of metrics and tags into an SQL store, in one transaction), ``recorder``
(the driver's writes as runs progress), ``replay`` (a run's metrics file, read incrementally)
and ``status`` (a grid's state, for ``gammaray status`` and ``cancel``)."""
