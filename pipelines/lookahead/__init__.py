"""Look-ahead analysis of forecasters and strategies (``gatecast check``).

Modelled on freqtrade's ``lookahead-analysis``: nothing computed for a date
``t`` may change when the bars after ``t`` change. The check runs on the
config's own data (loaded from ``data.source`` as the data stage loads it, so
no earlier stage need have run) at cut dates ``T`` spread over the
walk-forward test periods (``cut_positions``: ``--points`` per fold).

Forecasters (``check_forecaster``), per fold: one fit on the fold's training
bars, then every prediction from that same fitted object (so a stochastic fit
cannot pass for a leak), from the training start to the test end, as the train
stage does:

- *repeat*: predicting twice on the same bars gives the same forecasts, or
  the checks below would mean nothing (reported as an error);
- *truncation*: predicting with every bar after ``T`` removed;
- *perturbation*: predicting with every bar after ``T`` replaced by a random
  walk of plausible OHLCV (``noise_bars``, seeded by the config's seed);

and the forecasts dated ``<= T`` must equal those from the full bars within
``rtol`` (relative, default 1e-12, for float noise; NaN equals NaN; ``--rtol
0`` asks for bit-identical). The first date where they differ is the leak.

Strategies (``check_strategy``), each backtested as the backtest stage runs it
(``pipelines.execution.backtest_plan.strategy_plan``, the stage's execution settings and
warm-up, trading from the first test date; a forecast strategy reads the
forecasts its forecaster made above from the full bars, and every other
strategy the first forecaster's, so that the forecast line is checked too),
with every order read back from Backtrader's broker:

- *fill*: every filled order was filled on a bar strictly after the bar on
  which it was created (decided); a fill on the decision bar (cheat-on-close)
  is a leak dated at that bar;
- *truncation* and *perturbation*, as above, on the bars and the forecast
  line: the orders decided on bars ``<= T`` (date, side, size) and the fills
  on bars ``<= T`` (date, price, size) must be exactly the same.

A component that runs on the full bars but raises once the bars after ``T``
are removed depends on them: a leak dated ``T``. Any other exception is an
error. The command prints one row per component and exits 1 when any
component leaks or fails, naming it and its first leaking date.
"""
