"""A GRU forecaster: ``keras.layers.GRU`` with the LSTM forecaster's features and training.

It comes into a config only through the registry (the entry point ``gru`` of
``gatecast.forecasters``); see ``models.keras_lstm`` for what it shares with
the LSTM forecasters.
"""

from __future__ import annotations

from typing import ClassVar

from models.keras_lstm import KerasRecurrentForecaster

__all__ = ["GruForecaster"]


class GruForecaster(KerasRecurrentForecaster):
    """The LSTM forecaster with ``keras.layers.GRU`` layers (cuDNN on a GPU).

    Same features, training and parameters as ``LstmForecaster`` (see
    ``KerasRecurrentForecaster``): at every date ``t`` the GRU reads the
    ``window`` feature rows ending at ``t`` and forecasts ``close_t *
    exp(r_hat)``. Keras's GRU defaults (``reset_after=True``, the cuDNN form).
    """

    name: ClassVar[str] = "gru"
    label: ClassVar[str] = "GRU"
    layer: ClassVar[str] = "GRU"
