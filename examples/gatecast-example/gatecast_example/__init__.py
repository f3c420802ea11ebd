"""An out-of-tree gatecast plug-in: one forecaster and one strategy, found by entry points.

``DriftForecaster`` (``gatecast_example.forecaster``) and ``MomentumBand``
(``gatecast_example.strategy``) are registered in this package's
``pyproject.toml``; once it is installed a config names them ``drift`` and
``momentum_band``, and no gatecast module knows them.
"""
