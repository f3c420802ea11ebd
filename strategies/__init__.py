"""gatecast strategies: Backtrader feeds, strategies and the backtest engine (no keras, no mlflow)."""
