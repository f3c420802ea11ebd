"""GateLSTM: a Keras LSTM layer whose gates are written out as the textbook equations.

The layer keeps Keras's fused weight layout (``kernel``, ``recurrent_kernel``,
``bias``, gates in the order input, forget, candidate, output), so weights copy
across from ``keras.layers.LSTM``. One step function holds the maths; ``call``
keeps its hidden and cell states, and ``gate_activations`` keeps its gates too,
so the values plotted are the values the model computes.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import constraints, initializers, ops, regularizers

GATE_NAMES = ("i", "f", "c_tilde", "o", "c", "h")


def _lstm_step(
    z_x_t: Any, h_tm1: Any, c_tm1: Any, recurrent_kernel: Any
) -> tuple[Any, Any, tuple[Any, Any, Any, Any]]:
    """One LSTM step from the input projection ``z_x_t = x_t·W_x + b``.

    ``W·[h_{t-1}, x_t]`` is split as ``h_{t-1}·recurrent_kernel + x_t·kernel``;
    the ``x_t·kernel + b`` half is computed for all steps before the loop.
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


def _recurrence(
    inputs: Any,
    kernel: Any,
    recurrent_kernel: Any,
    bias: Any,
    h_0: Any,
    c_0: Any,
    mask: Any,
    return_sequences: bool,
    collect_gates: bool,
) -> tuple[Any, ...]:
    """Run ``_lstm_step`` over the time axis of ``inputs`` (batch, steps, features).

    Returns ``(output, h_T, c_T)``; with ``collect_gates`` the output is instead
    a tuple of (batch, steps, units) arrays in the order of ``GATE_NAMES``.
    Masked steps carry ``h`` and ``C`` through unchanged, as ``keras.layers.LSTM``
    does, so the output at a masked step repeats the last unmasked one.
    """
    # One matmul for the input half of every gate at every step, outside the
    # sequential loop: the loop is left with only the (units x 4*units) matmul.
    z_x = ops.matmul(inputs, kernel) + bias
    steps = inputs.shape[1]
    if steps is None:
        return _scan_recurrence(
            z_x, recurrent_kernel, h_0, c_0, mask, return_sequences, collect_gates
        )

    h_t, c_t = h_0, c_0
    per_step: list[tuple[Any, ...]] = []
    for t in range(steps):
        h_new, c_new, gates = _lstm_step(z_x[:, t, :], h_t, c_t, recurrent_kernel)
        if mask is not None:
            keep = mask[:, t : t + 1]
            h_new = ops.where(keep, h_new, h_t)
            c_new = ops.where(keep, c_new, c_t)
        h_t, c_t = h_new, c_new
        if collect_gates:
            per_step.append((*gates, c_t, h_t))
        elif return_sequences:
            per_step.append((h_t,))
    if collect_gates:
        return tuple(ops.stack(seq, axis=1) for seq in zip(*per_step, strict=True))
    output = ops.stack([s[0] for s in per_step], axis=1) if return_sequences else h_t
    return output, h_t, c_t


def _scan_recurrence(
    z_x: Any,
    recurrent_kernel: Any,
    h_0: Any,
    c_0: Any,
    mask: Any,
    return_sequences: bool,
    collect_gates: bool,
) -> tuple[Any, ...]:
    """The same recurrence with ``keras.ops.scan``, for a time axis of unknown length."""
    z_time_major = ops.transpose(z_x, (1, 0, 2))
    if mask is None:
        mask = ops.ones(ops.shape(z_x)[:2], dtype="bool")
    mask_time_major = ops.expand_dims(ops.transpose(mask, (1, 0)), -1)
    zeros = ops.zeros_like(h_0)

    # keras.ops.scan stacks the carry as its per-step output, so the gates ride
    # in the carry when they are wanted.
    def body(carry, xs):
        h_tm1, c_tm1 = carry[0], carry[1]
        z_x_t, keep = xs
        h_t, c_t, gates = _lstm_step(z_x_t, h_tm1, c_tm1, recurrent_kernel)
        h_t = ops.where(keep, h_t, h_tm1)
        c_t = ops.where(keep, c_t, c_tm1)
        new = (h_t, c_t, *gates) if collect_gates else (h_t, c_t)
        return new, new

    init = (h_0, c_0, zeros, zeros, zeros, zeros) if collect_gates else (h_0, c_0)
    last, seqs = ops.scan(body, init, (z_time_major, mask_time_major))
    seqs = [ops.transpose(s, (1, 0, 2)) for s in seqs]
    if collect_gates:
        h_seq, c_seq, i_seq, f_seq, c_tilde_seq, o_seq = seqs
        return i_seq, f_seq, c_tilde_seq, o_seq, c_seq, h_seq
    output = seqs[0] if return_sequences else last[0]
    return output, last[0], last[1]


_COMPILED: dict[str, Any] = {}


def _compiled_recurrence() -> Any:
    """``_recurrence`` compiled with XLA on the TensorFlow backend, else as it is.

    Compiling the loop inside the layer gives users the fused loop without
    changing how they compile their model; its gradient is compiled with it.
    """
    if keras.backend.backend() != "tensorflow":
        return _recurrence
    if "tf" not in _COMPILED:
        import tensorflow as tf

        _COMPILED["tf"] = tf.function(
            _recurrence, jit_compile=True, reduce_retracing=False, autograph=False
        )
    return _COMPILED["tf"]


@keras.saving.register_keras_serializable(package="gatecast")
class GateLSTM(keras.layers.Layer):
    """Long short-term memory layer that runs a whole sequence, gates written out.

    For every step ``t`` of a (batch, steps, features) input::

        f_t = sigmoid(W_f·[h_{t-1}, x_t] + b_f)        forget gate
        i_t = sigmoid(W_i·[h_{t-1}, x_t] + b_i)        input gate
        c_tilde = tanh(W_C·[h_{t-1}, x_t] + b_C)       candidate
        C_t = f_t * C_{t-1} + i_t * c_tilde            cell state
        o_t = sigmoid(W_o·[h_{t-1}, x_t] + b_o)        output gate
        h_t = o_t * tanh(C_t)

    ``W_g·[h, x]`` is stored split, as in ``keras.layers.LSTM``: ``kernel``
    (features, 4*units) multiplies ``x_t`` and ``recurrent_kernel``
    (units, 4*units) multiplies ``h_{t-1}``; the columns of both and of ``bias``
    (4*units) hold the gates in the order i, f, C, o. So
    ``GateLSTM(u).set_weights(keras.layers.LSTM(u).get_weights())`` gives the
    same layer. ``h_0`` and ``C_0`` are zeros unless ``initial_state`` is given.

    Args:
        units: Size of the hidden and cell state, at least 1.
        return_sequences: Return ``h_t`` for every step (batch, steps, units)
            instead of the last one (batch, units).
        return_state: Also return the final ``h`` and ``C``: ``[output, h, C]``.
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
        jit_compile: On the TensorFlow backend, compile the recurrence with XLA
            (the model itself is compiled however the user chooses). Other
            backends run the same ``keras.ops`` code as it is.
        seed: Seed of the dropout masks.
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
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int | np.integer) or units < 1:
            raise ValueError(
                f"GateLSTM: `units` must be a positive integer (the size of the hidden "
                f"state), got units={units!r}. Pass e.g. units=32."
            )
        dropout = float(dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"GateLSTM: `dropout` is the fraction of input features dropped while "
                f"training and must be in [0, 1), got dropout={dropout!r}."
            )
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.dropout = dropout
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
        self.jit_compile = bool(jit_compile)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if dropout > 0 else None
        self.supports_masking = True

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

    def build(self, input_shape: Any) -> None:
        self._check_input_shape(input_shape)
        input_dim = int(input_shape[-1])
        units = self.units
        self.kernel = self.add_weight(
            shape=(input_dim, 4 * units),
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

    def _run(
        self,
        inputs: Any,
        initial_state: Any,
        mask: Any,
        training: bool | None,
        collect_gates: bool,
    ) -> tuple[Any, ...]:
        self._check_input_shape(inputs.shape)
        dtype = self.compute_dtype
        inputs = ops.cast(inputs, dtype)
        if training and self.dropout > 0:
            # One mask per sequence, shared by every step (Keras's LSTM does the same).
            keep = keras.random.dropout(
                ops.ones_like(inputs[:, :1, :]), self.dropout, seed=self.seed_generator
            )
            inputs = inputs * keep
        if initial_state is None:
            h_0 = ops.zeros((ops.shape(inputs)[0], self.units), dtype=dtype)
            c_0 = h_0
        else:
            if not isinstance(initial_state, list | tuple) or len(initial_state) != 2:
                raise ValueError(
                    f"GateLSTM '{self.name}': `initial_state` must be [h_0, C_0], each of "
                    f"shape (batch, {self.units}); got {initial_state!r}."
                )
            h_0, c_0 = (ops.cast(s, dtype) for s in initial_state)
        if mask is not None:
            mask = ops.cast(mask, "bool")
        recurrence = _compiled_recurrence() if self.jit_compile else _recurrence
        return recurrence(
            inputs,
            ops.cast(self.kernel, dtype),
            ops.cast(self.recurrent_kernel, dtype),
            ops.cast(self.bias, dtype),
            h_0,
            c_0,
            mask,
            self.return_sequences,
            collect_gates,
        )

    def call(
        self,
        inputs: Any,
        initial_state: Any = None,
        mask: Any = None,
        training: bool | None = None,
    ) -> Any:
        output, h_t, c_t = self._run(inputs, initial_state, mask, training, collect_gates=False)
        if self.return_state:
            return [output, h_t, c_t]
        return output

    def gate_activations(
        self, inputs: Any, initial_state: Any = None, mask: Any = None
    ) -> dict[str, np.ndarray]:
        """Per-step gate values for a batch, from the same step function as ``call``.

        Args:
            inputs: (batch, steps, features) array.
            initial_state: Optional ``[h_0, C_0]``.
            mask: Optional (batch, steps) boolean mask.

        Returns:
            NumPy arrays of shape (batch, steps, units) keyed ``"i"``, ``"f"``,
            ``"c_tilde"``, ``"o"`` (the gates), ``"c"`` (cell state ``C_t``) and
            ``"h"`` (hidden state ``h_t``), computed in inference mode.
        """
        inputs = ops.convert_to_tensor(inputs)
        if not self.built:
            self.build(tuple(inputs.shape))
        seqs = self._run(inputs, initial_state, mask, training=False, collect_gates=True)
        return {name: ops.convert_to_numpy(seq) for name, seq in zip(GATE_NAMES, seqs, strict=True)}

    def compute_output_shape(self, input_shape: Any) -> Any:
        batch, steps = input_shape[0], input_shape[1]
        output = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return [output, (batch, self.units), (batch, self.units)]
        return output

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask, None, None]
        return output_mask

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "return_sequences": self.return_sequences,
                "return_state": self.return_state,
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
                "jit_compile": self.jit_compile,
                "seed": self.seed,
            }
        )
        return config
