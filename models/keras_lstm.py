"""Keras's own LSTM layer in the LSTM forecaster's place: the hand-built layer's benchmark.

``KerasLstmForecaster`` is ``models.lstm.LstmForecaster`` (same features,
scaler, windows, target, training loop, early stopping, seeds and persistence)
with ``keras.layers.LSTM`` instead of ``GateLSTM``, so a report compares the
hand-built layer with Keras's in trading terms. On a GPU Keras runs its layer on
cuDNN. It comes into a config only through the registry (the entry point
``keras_lstm`` of ``gatecast.forecasters``); ``models.gru`` does the same with
``keras.layers.GRU``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from models.lstm import LstmForecaster

if TYPE_CHECKING:  # Keras loads when a model is built, not on import
    import keras

__all__ = ["KerasLstmForecaster", "KerasRecurrentForecaster"]


class KerasRecurrentForecaster(LstmForecaster):
    """The LSTM forecaster with a recurrent layer of Keras's own, ``keras.layers.<layer>``.

    Everything but the layer is ``LstmForecaster``'s, its ``Config`` (the keys
    under ``forecasters.<name>``) included: at every date ``t`` the network reads
    the ``window`` standardised feature rows ending at ``t`` (bars up to ``t``
    only) and outputs the scaled next log return ``r_hat``; the forecast of the
    next close is ``close_t * exp(r_hat)``. Layer ``k`` is
    ``keras.layers.<layer>(units[k], dropout=dropout, seed=seed + k)`` with
    Keras's defaults (cuDNN on a GPU), every layer but the last returning
    sequences.

    ``batch_shards`` is GateLSTM's and must stay None; a subclass sets ``name``,
    ``label`` and ``layer`` (the name of a class in ``keras.layers``).
    """

    introspection: ClassVar[bool] = False
    layer: ClassVar[str]

    @classmethod
    def settle(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` unchanged: Keras's layers choose nothing per process
        (``LstmForecaster.settle`` fixes GateLSTM's ``batch_shards``)."""
        return dict(params)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """``LstmForecaster``'s arguments; ``batch_shards`` must be None."""
        super().__init__(*args, **kwargs)
        if self.batch_shards is not None:
            raise ValueError(
                f"{type(self).__name__}: batch_shards is GateLSTM's (the hand-built lstm's); "
                f"keras.layers.{self.layer} does not take it"
            )

    def _recurrent_layer(self, k: int, units: int, return_sequences: bool) -> keras.Layer:
        import keras

        return getattr(keras.layers, self.layer)(
            units,
            return_sequences=return_sequences,
            dropout=self.dropout,
            seed=self.seed + k,
            name=f"{self.layer.lower()}_{k}",
        )

    def gate_activations_per_unit(
        self, bars: pd.DataFrame, start: pd.Timestamp | None = None
    ) -> dict[str, pd.DataFrame]:
        """Not available: gate values are the hand-built layer's (``introspection``)."""
        raise NotImplementedError(
            f"{type(self).__name__} ({self.name}) has no gate values: keras.layers.{self.layer} "
            "does not expose its gates; introspection is the hand-built lstm's "
            "(GateLSTM.gate_activations)"
        )


class KerasLstmForecaster(KerasRecurrentForecaster):
    """The LSTM forecaster on ``keras.layers.LSTM`` (cuDNN on a GPU) instead of ``GateLSTM``.

    Same features, training and parameters as ``LstmForecaster`` (see
    ``KerasRecurrentForecaster``); Keras's layer has the same gates in the same
    order, initialisers and forget-gate bias as ``GateLSTM``, so the two differ
    only in how the layer is computed.
    """

    name: ClassVar[str] = "keras_lstm"
    label: ClassVar[str] = "Keras LSTM"
    layer: ClassVar[str] = "LSTM"
