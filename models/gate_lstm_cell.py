"""GateLSTMCell: one step of the LSTM, the six textbook equations, with the Keras RNN-cell API.

``lstm_step`` holds the maths of one step; ``scan_steps`` runs it over a
sequence with ``keras.ops.scan``. ``GateLSTMCell`` holds the weights in Keras's
fused layout (``kernel``, ``recurrent_kernel``, ``bias``, gates in the order
input, forget, candidate, output), so ``keras.layers.RNN(GateLSTMCell(n))``
works and weights copy across from ``keras.layers.LSTM``. The sequence layer
(``models.gate_lstm.GateLSTM``) and its fast path (``models.gate_lstm_xla``)
both run this same step, so the gate values plotted are the values the model
computes.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import constraints, initializers, ops, regularizers

# Keras's own mixin for RNN cells with dropout: keras.layers.RNN recognises it and
# draws the masks before its loop (one mask per sequence, none inside the loop).
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

GATE_NAMES = ("i", "f", "c_tilde", "o", "c", "h")
WEIGHT_NAMES = ("kernel", "recurrent_kernel", "bias")


def lstm_step(
    z_x_t: Any, h_tm1: Any, c_tm1: Any, recurrent_kernel: Any
) -> tuple[Any, Any, tuple[Any, Any, Any, Any]]:
    """One LSTM step from the input projection ``z_x_t = x_t·kernel + bias``.

    ``W·[h_{t-1}, x_t]`` is split as ``h_{t-1}·recurrent_kernel + x_t·kernel``,
    so a loop can compute the ``x_t`` half for all steps at once.
    Returns ``h_t``, ``C_t`` and the gates ``(i_t, f_t, c_tilde, o_t)``.
    """
    z = z_x_t + ops.matmul(h_tm1, recurrent_kernel)
    z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
    f_t = ops.sigmoid(z_f)
    i_t = ops.sigmoid(z_i)
    c_tilde = ops.tanh(z_c)
    c_t = f_t * c_tm1 + i_t * c_tilde
    o_t = ops.sigmoid(z_o)
    h_t = o_t * ops.tanh(c_t)
    return h_t, c_t, (i_t, f_t, c_tilde, o_t)


def scan_steps(
    z_x_time_major: Any,
    recurrent_kernel: Any,
    h_0: Any,
    c_0: Any,
    keep_time_major: Any = None,
) -> tuple[Any, Any, Any]:
    """``lstm_step`` over a (steps, batch, 4*units) input projection, every value kept.

    Returns time-major ``(h, C, gates)``, ``gates`` being (steps, batch,
    4*units): ``i, f, c_tilde, o`` side by side. Masked steps (``keep`` false,
    (steps, batch, 1)) carry ``h`` and ``C`` through unchanged, as
    ``keras.layers.LSTM`` does.
    """

    # keras.ops.scan (TensorFlow backend) keeps per step what it carries, so the
    # gates ride in the carry.
    def body(carry: tuple[Any, ...], xs: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        h_tm1, c_tm1 = carry[0], carry[1]
        z_x_t = xs if keep_time_major is None else xs[0]
        h_t, c_t, gates = lstm_step(z_x_t, h_tm1, c_tm1, recurrent_kernel)
        if keep_time_major is not None:
            h_t = ops.where(xs[1], h_t, h_tm1)
            c_t = ops.where(xs[1], c_t, c_tm1)
        new = (h_t, c_t, ops.concatenate(gates, axis=-1))
        return new, new

    init = (h_0, c_0, ops.zeros_like(ops.concatenate([h_0] * 4, axis=-1)))
    xs = z_x_time_major if keep_time_major is None else (z_x_time_major, keep_time_major)
    return ops.scan(body, init, xs)[1]


def batch_major_gates(seqs: tuple[Any, Any, Any]) -> tuple[Any, ...]:
    """``scan_steps``'s time-major ``(h, C, gates)`` -> batch-major, in ``GATE_NAMES`` order."""
    h_seq, c_seq, gates = seqs
    ordered = (*ops.split(gates, 4, axis=-1), c_seq, h_seq)
    return tuple(ops.transpose(s, (1, 0, 2)) for s in ordered)


def _check_units(owner: str, units: Any) -> int:
    if isinstance(units, bool) or not isinstance(units, int | np.integer) or units < 1:
        raise ValueError(
            f"{owner}: `units` must be a positive integer (the size of the hidden "
            f"state), got units={units!r}. Pass e.g. units=32."
        )
    return int(units)


def _check_dropout(owner: str, dropout: Any) -> float:
    dropout = float(dropout)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"{owner}: `dropout` is the fraction of input features dropped while "
            f"training and must be in [0, 1), got dropout={dropout!r}."
        )
    return dropout


@keras.saving.register_keras_serializable(package="gatecast")
class GateLSTMCell(keras.layers.Layer, DropoutRNNCell):
    """One LSTM step with its gates written out, for ``keras.layers.RNN``.

    From ``x_t`` (batch, features) and the states ``[h_{t-1}, C_{t-1}]``::

        f_t = sigmoid(W_f·[h_{t-1}, x_t] + b_f)        forget gate
        i_t = sigmoid(W_i·[h_{t-1}, x_t] + b_i)        input gate
        c_tilde = tanh(W_C·[h_{t-1}, x_t] + b_C)       candidate
        C_t = f_t * C_{t-1} + i_t * c_tilde            cell state
        o_t = sigmoid(W_o·[h_{t-1}, x_t] + b_o)        output gate
        h_t = o_t * tanh(C_t)

    and returns ``(h_t, [h_t, C_t])``. ``W_g·[h, x]`` is stored split, as in
    ``keras.layers.LSTMCell``: ``kernel`` (features, 4*units) multiplies
    ``x_t`` and ``recurrent_kernel`` (units, 4*units) multiplies ``h_{t-1}``;
    the columns of both and of ``bias`` (4*units) hold the gates in the order
    i, f, C, o, so weights copy across from ``keras.layers.LSTMCell``.

    Example:

    >>> x = np.random.random((32, 10, 8)).astype("float32")
    >>> tuple(keras.layers.RNN(GateLSTMCell(4))(x).shape)
    (32, 4)

    Args:
        units: Size of the hidden and cell state, at least 1.
        dropout: Fraction of the input features dropped while training, with one
            mask per sequence (the same features at every step), as Keras does.
        unit_forget_bias: Start the forget-gate bias at 1 (the rest by
            ``bias_initializer``), so the cell remembers by default.
        kernel_initializer: Initializer of ``kernel``.
        recurrent_initializer: Initializer of ``recurrent_kernel``.
        bias_initializer: Initializer of ``bias``.
        kernel_regularizer: Regularizer of ``kernel``.
        recurrent_regularizer: Regularizer of ``recurrent_kernel``.
        bias_regularizer: Regularizer of ``bias``.
        kernel_constraint: Constraint on ``kernel``.
        recurrent_constraint: Constraint on ``recurrent_kernel``.
        bias_constraint: Constraint on ``bias``.
        seed: Seed of the dropout masks.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: (batch, features) tensor, one step.
        states: ``[h_{t-1}, C_{t-1}]``, each (batch, units).
        training: Whether dropout is applied.
    """

    def __init__(
        self,
        units: int,
        dropout: float = 0.0,
        unit_forget_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        recurrent_initializer: Any = "orthogonal",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        recurrent_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        recurrent_constraint: Any = None,
        bias_constraint: Any = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.units = _check_units(type(self).__name__, units)
        self.dropout = _check_dropout(type(self).__name__, dropout)
        self.recurrent_dropout = 0.0  # read by DropoutRNNCell
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.dropout > 0 else None
        self.state_size = [self.units, self.units]
        self.output_size = self.units

    def build(self, input_shape: Any) -> None:
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' needs a known number of input "
                f"features (the last axis), got shape {tuple(input_shape)}."
            )
        units = self.units
        self.kernel = self.add_weight(
            shape=(int(input_dim), 4 * units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(units, 4 * units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        if self.unit_forget_bias:
            base = self.bias_initializer

            def bias_initializer(shape: Any, dtype: Any = None) -> Any:
                return ops.concatenate(
                    [
                        base((units,), dtype=dtype),
                        ops.ones((units,), dtype=dtype),
                        base((2 * units,), dtype=dtype),
                    ]
                )

        else:
            bias_initializer = self.bias_initializer
        self.bias = self.add_weight(
            shape=(4 * units,),
            name="bias",
            initializer=bias_initializer,
            regularizer=self.bias_regularizer,
            constraint=self.bias_constraint,
        )

    def call(self, inputs: Any, states: Any, training: bool = False) -> tuple[Any, list[Any]]:
        h_tm1, c_tm1 = states[0], states[1]
        if training and self.dropout > 0:
            inputs = inputs * self.get_dropout_mask(inputs)
        z_x_t = ops.matmul(inputs, self.kernel) + self.bias
        h_t, c_t, _ = lstm_step(z_x_t, h_tm1, c_tm1, self.recurrent_kernel)
        return h_t, [h_t, c_t]

    def get_initial_state(self, batch_size: Any = None) -> list[Any]:
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype)] * 2

    def load_own_variables(self, store: Any) -> None:
        # The owning GateLSTM already loaded a file written before the cell existed.
        if getattr(self, "_loaded_by_layer", False) and not list(store.keys()):
            self._loaded_by_layer = False
            return
        super().load_own_variables(store)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "dropout": self.dropout,
                "unit_forget_bias": self.unit_forget_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": constraints.serialize(self.kernel_constraint),
                "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint),
                "seed": self.seed,
            }
        )
        return config


# The cell's arguments that GateLSTM passes through and reports in its own config.
