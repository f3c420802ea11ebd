"""gatecast models: the GateLSTM layer and the forecasters (no backtrader, no mlflow)."""
