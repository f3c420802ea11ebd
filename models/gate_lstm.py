"""GateLSTM: a Keras LSTM whose gates are written out as the textbook equations.

Built as Keras builds its own LSTM (``keras/src/layers/rnn/lstm.py``):
``GateLSTMCell`` (``models.gate_lstm_cell``) holds the weights and the six
equations of one step, with the Keras RNN-cell API, so ``keras.layers.RNN(GateLSTMCell(n))`` works;
``GateLSTM`` is a ``keras.layers.RNN`` over that cell, and so gets
``Bidirectional``, ``go_backwards``, ``return_sequences``, ``return_state``,
``stateful``, masking and stacking from Keras. On TensorFlow its
``inner_loop`` first tries the fast path of ``models.gate_lstm_xla`` (an XLA
loop with the backward pass derived by hand) and falls back to Keras's
generic loop where that cannot run, so the fast path never shapes the API.

Both keep Keras's fused weight layout (``kernel``, ``recurrent_kernel``,
``bias``, gates in the order input, forget, candidate, output), so weights copy
across from ``keras.layers.LSTM``. One step function, ``lstm_step``, holds the
maths for the cell, the fast path and ``GateLSTM.gate_activations``, so the
gate values plotted are the values the model computes.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras
import numpy as np
from keras import ops

from models import gate_lstm_xla
from models.gate_lstm_cell import (
    GATE_NAMES,
    WEIGHT_NAMES,
    GateLSTMCell,
    _check_dropout,
    _check_units,
    batch_major_gates,
    lstm_step,
    scan_steps,
)

__all__ = ["GATE_NAMES", "GateLSTM", "GateLSTMCell", "lstm_step", "scan_steps"]

_CELL_ARGS = (
    "units",
    "dropout",
    "unit_forget_bias",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
    "seed",
)


def _cell_attribute(name: str) -> property:
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's ``{name}``.")


@keras.saving.register_keras_serializable(package="gatecast")
class GateLSTM(keras.layers.RNN):
    """Long short-term memory layer: ``GateLSTMCell`` run over a sequence, fast on TensorFlow.

    For every step ``t`` of a (batch, steps, features) input::

        f_t = sigmoid(W_f·[h_{t-1}, x_t] + b_f)        forget gate
        i_t = sigmoid(W_i·[h_{t-1}, x_t] + b_i)        input gate
        c_tilde = tanh(W_C·[h_{t-1}, x_t] + b_C)       candidate
        C_t = f_t * C_{t-1} + i_t * c_tilde            cell state
        o_t = sigmoid(W_o·[h_{t-1}, x_t] + b_o)        output gate
        h_t = o_t * tanh(C_t)

    The weights are the cell's, laid out as in ``keras.layers.LSTM`` (see
    ``GateLSTMCell``), so ``GateLSTM(u).set_weights(keras.layers.LSTM(u).get_weights())``
    gives the same layer. ``h_0`` and ``C_0`` are zeros unless ``initial_state``
    is given (or, with ``stateful``, the last batch's final states).

    How the loop runs: on the TensorFlow backend, with ``jit_compile`` and no
    mask, as the fast path of ``models.gate_lstm_xla``: the forward pass and
    backpropagation through time written out from the same equations, each one
    XLA program, whatever the model's own ``compile`` settings, with the batch
    cut into ``batch_shards`` row blocks run at the same time. Otherwise
    (masks, sequences of unknown length, ``unroll``, other backends,
    ``jit_compile=False``) Keras's generic RNN loop runs the cell with automatic
    differentiation. The tests check both against ``keras.layers.LSTM``.

    Example:

    >>> x = np.random.random((32, 10, 8)).astype("float32")
    >>> tuple(GateLSTM(4)(x).shape)
    (32, 4)
    >>> tuple(keras.layers.Bidirectional(GateLSTM(4, return_sequences=True))(x).shape)
    (32, 10, 8)

    Args:
        units: Size of the hidden and cell state, at least 1.
        return_sequences: Return ``h_t`` for every step (batch, steps, units)
            instead of the last one (batch, units).
        return_state: Also return the final ``h`` and ``C``: ``(output, h, C)``.
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
        jit_compile: Try the XLA fast path (TensorFlow only) before the generic loop.
        batch_shards: With the XLA loop, cut each batch into this many row
            blocks whose loops run at the same time on TensorFlow's inter-op
            threads; the result is the same as one loop. None: one block per
            CPU core (at most 8, and at least 16 rows each), or 1 when
            TensorFlow sees a GPU. 1 runs one loop over the whole batch.
        seed: Seed of the dropout masks.
        go_backwards: Process the sequence from its last step to its first;
            the output sequence comes in that order too (as in Keras).
        stateful: Start each batch from the final states of the previous one.
        unroll: Unroll Keras's generic loop (short sequences only); no fast path.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: (batch, steps, features) tensor.
        initial_state: Optional ``[h_0, C_0]``, each (batch, units).
        mask: Optional (batch, steps) boolean mask; masked steps leave ``h`` and
            ``C`` unchanged (as after ``keras.layers.Masking``).
        training: Whether dropout is applied.
    """

    def __init__(
        self,
        units: int,
        return_sequences: bool = False,
        return_state: bool = False,
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
        jit_compile: bool = True,
        batch_shards: int | None = None,
        seed: int | None = None,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        **kwargs: Any,
    ) -> None:
        if batch_shards is not None and (
            isinstance(batch_shards, bool)
            or not isinstance(batch_shards, int | np.integer)
            or batch_shards < 1
        ):
            raise ValueError(
                f"GateLSTM: `batch_shards` is the number of row blocks of a batch run at "
                f"the same time and must be a positive integer or None (one per CPU "
                f"core), got batch_shards={batch_shards!r}."
            )
        cell = GateLSTMCell(
            _check_units("GateLSTM", units),
            dropout=_check_dropout("GateLSTM", dropout),
            unit_forget_bias=unit_forget_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            seed=seed,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="gate_lstm_cell",
        )
        super().__init__(
            cell,
            return_sequences=bool(return_sequences),
            return_state=bool(return_state),
            go_backwards=bool(go_backwards),
            stateful=bool(stateful),
            unroll=bool(unroll),
            **kwargs,
        )
        self.jit_compile = bool(jit_compile)
        self.batch_shards = None if batch_shards is None else int(batch_shards)

    units = _cell_attribute("units")
    dropout = _cell_attribute("dropout")
    unit_forget_bias = _cell_attribute("unit_forget_bias")
    seed = _cell_attribute("seed")
    kernel_initializer = _cell_attribute("kernel_initializer")
    recurrent_initializer = _cell_attribute("recurrent_initializer")
    bias_initializer = _cell_attribute("bias_initializer")
    kernel_regularizer = _cell_attribute("kernel_regularizer")
    recurrent_regularizer = _cell_attribute("recurrent_regularizer")
    bias_regularizer = _cell_attribute("bias_regularizer")
    kernel_constraint = _cell_attribute("kernel_constraint")
    recurrent_constraint = _cell_attribute("recurrent_constraint")
    bias_constraint = _cell_attribute("bias_constraint")

    def _check_input_shape(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(
                f"GateLSTM '{self.name}' expects inputs of shape (batch, steps, features), "
                f"got rank {len(shape)} with shape {shape}. Window 2-D data into sequences "
                f"first, e.g. x.reshape(batch, steps, features)."
            )
        if shape[-1] is None:
            raise ValueError(
                f"GateLSTM '{self.name}' needs a known number of features (the last axis "
                f"of (batch, steps, features)), got shape {shape}."
            )

    def build(self, sequences_shape: Any, initial_state_shape: Any = None) -> None:
        self._check_input_shape(sequences_shape)
        super().build(sequences_shape, initial_state_shape)

    def call(
        self,
        sequences: Any,
        initial_state: Any = None,
        mask: Any = None,
        training: bool | None = False,
    ) -> Any:
        self._check_input_shape(sequences.shape)
        if initial_state is not None and (
            not isinstance(initial_state, list | tuple) or len(initial_state) != 2
        ):
            raise ValueError(
                f"GateLSTM '{self.name}': `initial_state` must be [h_0, C_0], each of "
                f"shape (batch, {self.units}); got {initial_state!r}."
            )
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)

    def inner_loop(
        self, sequences: Any, initial_state: Any, mask: Any, training: bool | None = False
    ) -> tuple[Any, Any, list[Any]]:
        if keras.tree.is_nested(mask):
            mask = mask[0]
        if self.jit_compile and not self.unroll and gate_lstm_xla.supported(sequences, mask):
            dropped = sequences
            if training and self.dropout > 0:
                # One mask per sequence, drawn by keras.layers.RNN before its loop.
                keep = self.cell.get_dropout_mask(sequences[:, 0, :])
                dropped = sequences * ops.expand_dims(keep, 1)
            return gate_lstm_xla.lstm(
                dropped,
                initial_state[0],
                initial_state[1],
                mask,
                *self._weights(self.cell.compute_dtype),
                return_sequences=self.return_sequences,
                go_backwards=self.go_backwards,
                shards=self._shards(sequences.shape[0]),
            )
        return super().inner_loop(sequences, initial_state, mask=mask, training=training)

    def _weights(self, dtype: str) -> tuple[Any, Any, Any]:
        """``kernel``, ``recurrent_kernel`` and ``bias`` as tensors of ``dtype``."""
        cell = self.cell
        return tuple(ops.cast(w, dtype) for w in (cell.kernel, cell.recurrent_kernel, cell.bias))

    def _shards(self, batch: int | None) -> int:

        if self.batch_shards is not None:
            return self.batch_shards
        shards = gate_lstm_xla.default_batch_shards()
        if batch is not None:
            shards = min(shards, batch // gate_lstm_xla.MIN_AUTO_SHARD_ROWS)
        return max(1, shards)

    def gate_activations(
        self, inputs: Any, initial_state: Any = None, mask: Any = None
    ) -> dict[str, np.ndarray]:
        """Per-step gate values for a batch, from the same step function as ``call``.

        Args:
            inputs: (batch, steps, features) array.
            initial_state: Optional ``[h_0, C_0]``; by default zeros (or, with
                ``stateful``, the layer's current states, left unchanged).
            mask: Optional (batch, steps) boolean mask.

        Returns:
            NumPy arrays of shape (batch, steps, units) keyed ``"i"``, ``"f"``,
            ``"c_tilde"``, ``"o"`` (the gates), ``"c"`` (cell state ``C_t``) and
            ``"h"`` (hidden state ``h_t``), computed in inference mode, steps in
            the order they are processed (last first with ``go_backwards``).
        """
        inputs = ops.convert_to_tensor(inputs)
        self._check_input_shape(inputs.shape)
        if not self.built:
            self.build(tuple(inputs.shape))
        dtype = self.cell.compute_dtype
        inputs = ops.cast(inputs, dtype)
        if initial_state is None and self.stateful:
            initial_state = self.states
        if initial_state is None:
            h_0, c_0 = self.cell.get_initial_state(ops.shape(inputs)[0])
        else:
            h_0, c_0 = (ops.cast(s, dtype) for s in initial_state)
        if self.go_backwards:
            inputs = ops.flip(inputs, axis=1)
            mask = None if mask is None else ops.flip(mask, axis=1)
        seqs = self._gate_sequences(inputs, h_0, c_0, mask, dtype)
        return {
            name: ops.convert_to_numpy(seq)
            for name, seq in zip(GATE_NAMES, batch_major_gates(seqs), strict=True)
        }

    def _gate_sequences(
        self, inputs: Any, h_0: Any, c_0: Any, mask: Any, dtype: str
    ) -> tuple[Any, Any, Any]:
        """Time-major ``(h, C, gates)``: the fast path's forward pass where it can run."""
        kernel, recurrent_kernel, bias = self._weights(dtype)
        if self.jit_compile and mask is None:
            with contextlib.suppress(NotImplementedError):
                return gate_lstm_xla.gate_sequences(
                    inputs, kernel, recurrent_kernel, bias, h_0, c_0
                )
        z_x = ops.transpose(ops.matmul(inputs, kernel) + bias, (1, 0, 2))
        keep = None
        if mask is not None:
            keep = ops.expand_dims(ops.transpose(ops.cast(mask, "bool"), (1, 0)), -1)
        return scan_steps(z_x, recurrent_kernel, h_0, c_0, keep)

    def load_own_variables(self, store: Any) -> None:
        # A file written before GateLSTM had a cell holds the cell's three weights
        # on the layer itself: load them into the cell, whose own entry is empty.
        keys = list(store.keys())
        own = self._trainable_variables + self._non_trainable_variables
        if not own and len(keys) == len(WEIGHT_NAMES):
            for k, name in enumerate(WEIGHT_NAMES):
                getattr(self.cell, name).assign(store[str(k)])
            self.cell._loaded_by_layer = True
            return
        super().load_own_variables(store)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["cell"]
        cell_config = self.cell.get_config()
        config.update({name: cell_config[name] for name in _CELL_ARGS})
        config.update(jit_compile=self.jit_compile, batch_shards=self.batch_shards)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GateLSTM:
        return cls(**config)
