"""gatecast models: the GateLSTM cell and layer, and the forecasters (no backtrader, no mlflow).

``models.gate_lstm`` holds the cell (the six equations) and the layer;
``models.gate_lstm_xla`` holds the layer's fast path on TensorFlow.
"""
