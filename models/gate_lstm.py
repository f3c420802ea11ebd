"""GateLSTM: a Keras LSTM layer whose gates are written out as the textbook equations.

The layer keeps Keras's fused weight layout (``kernel``, ``recurrent_kernel``,
``bias``, gates in the order input, forget, candidate, output), so weights copy
across from ``keras.layers.LSTM``. One step function holds the maths; ``call``
keeps its hidden and cell states, and ``gate_activations`` keeps its gates too,
so the values plotted are the values the model computes.
"""

from __future__ import annotations

import functools
import operator
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


def _scan_steps(
    z_x_time_major: Any,
    recurrent_kernel: Any,
    h_0: Any,
    c_0: Any,
    keep_time_major: Any,
    collect_gates: bool,
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Loop ``_lstm_step`` over a (steps, batch, 4*units) input projection.

    Returns the last carry ``(h_T, C_T, ...)`` and the per-step values, time
    major: ``(h, C)``, or ``(h, C, gates)`` with ``collect_gates``, where
    ``gates`` is (steps, batch, 4*units): ``i, f, c_tilde, o`` side by side.
    Masked steps (``keep`` false) carry ``h`` and ``C`` through unchanged, as
    ``keras.layers.LSTM`` does, so the output there repeats the last kept one.
    """

    # keras.ops.scan (TensorFlow backend) keeps per step what it carries, so the
    # gates ride in the carry when they are wanted.
    def body(carry: tuple[Any, ...], xs: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        h_tm1, c_tm1 = carry[0], carry[1]
        z_x_t = xs if keep_time_major is None else xs[0]
        h_t, c_t, gates = _lstm_step(z_x_t, h_tm1, c_tm1, recurrent_kernel)
        if keep_time_major is not None:
            h_t = ops.where(xs[1], h_t, h_tm1)
            c_t = ops.where(xs[1], c_t, c_tm1)
        new = (h_t, c_t, ops.concatenate(gates, axis=-1)) if collect_gates else (h_t, c_t)
        return new, new

    if collect_gates:
        init = (h_0, c_0, ops.zeros_like(ops.concatenate([h_0] * 4, axis=-1)))
    else:
        init = (h_0, c_0)
    xs = z_x_time_major if keep_time_major is None else (z_x_time_major, keep_time_major)
    return ops.scan(body, init, xs)


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
    """Run the LSTM over ``inputs`` (batch, steps, features); gradients by autodiff.

    Returns ``(output, h_T, C_T)``; with ``collect_gates`` instead a tuple of
    (batch, steps, units) arrays in the order of ``GATE_NAMES``.
    """
    # One matmul for the input half of every gate at every step, outside the
    # sequential loop: the loop is left with only the (units x 4*units) matmul.
    z_x = ops.transpose(ops.matmul(inputs, kernel) + bias, (1, 0, 2))
    keep = None if mask is None else ops.expand_dims(ops.transpose(mask, (1, 0)), -1)
    last, seqs = _scan_steps(z_x, recurrent_kernel, h_0, c_0, keep, collect_gates)
    if collect_gates:
        return _batch_major_gates(seqs)
    output = ops.transpose(seqs[0], (1, 0, 2)) if return_sequences else last[0]
    return output, last[0], last[1]


def _batch_major_gates(seqs: tuple[Any, Any, Any]) -> tuple[Any, ...]:
    """``(h, C, gates)`` time major -> batch-major arrays in the order of ``GATE_NAMES``."""
    h_seq, c_seq, gates = seqs
    ordered = (*ops.split(gates, 4, axis=-1), c_seq, h_seq)
    return tuple(ops.transpose(s, (1, 0, 2)) for s in ordered)


def _forward_all_steps(
    inputs: Any, kernel: Any, recurrent_kernel: Any, bias: Any, h_0: Any, c_0: Any
) -> tuple[Any, ...]:
    """Every step's ``(h, C, gates)``, time major, from ``_scan_steps``."""
    z_x = ops.transpose(ops.matmul(inputs, kernel) + bias, (1, 0, 2))
    return _scan_steps(z_x, recurrent_kernel, h_0, c_0, None, collect_gates=True)[1]


def _backward_all_steps(
    inputs: Any,
    kernel: Any,
    recurrent_kernel: Any,
    h_0: Any,
    c_0: Any,
    saved: tuple[Any, ...],
    grad_output: Any,
    grad_h: Any,
    grad_c: Any,
    return_sequences: bool,
) -> tuple[Any, ...]:
    """Backpropagation through time for ``_forward_all_steps``, from its saved gates.

    The chain rule of the six equations, step by step backwards, carries only
    dL/dh and dL/dC through the loop; the weight gradients are then one
    contraction over all steps instead of a sum accumulated inside the loop.
    Checked against autodiff of ``keras.layers.LSTM`` in the tests.

    Measured on a 2-core CPU (``benchmarks/gate_lstm.py``), these variants were
    no faster and are not used: accumulating the weight gradients inside the
    loop, unrolling 2-6 steps per loop iteration, a (units, batch) state layout,
    and one tanh for all four gates; fully unrolling 60 steps took over a
    minute to compile and ran slower. ``keras.ops.fori_loop`` writing dL/dz
    into one buffer took 5-8% less time than ``keras.ops.scan``, which also
    stacks dL/dh and dL/dC; in the forward pass, where every stacked value is
    needed, the two were within noise.
    """
    h_seq, c_seq, gate_seq = saved
    steps = gate_seq.shape[0]
    c_prev = ops.concatenate([ops.expand_dims(c_0, 0), c_seq[:-1]], axis=0)
    h_prev = ops.concatenate([ops.expand_dims(h_0, 0), h_seq[:-1]], axis=0)
    if return_sequences:
        grad_h_seq = ops.transpose(grad_output, (1, 0, 2))
    else:
        # Only the last step's h is an output: its gradient joins dL/dh_T.
        grad_h = grad_h + grad_output
    recurrent_kernel_t = ops.transpose(recurrent_kernel)

    def at(seq: Any, t: Any) -> Any:
        return ops.squeeze(ops.slice(seq, (t, 0, 0), (1, *ops.shape(seq)[1:])), 0)

    def body(k: Any, carry: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
        d_h, d_c, d_z_seq = carry
        t = steps - 1 - k
        if return_sequences:  # dL/dh_t from the output at step t
            d_h = d_h + at(grad_h_seq, t)
        i_t, f_t, c_tilde, o_t = ops.split(at(gate_seq, t), 4, axis=-1)
        c_tm1 = at(c_prev, t)
        tanh_c = ops.tanh(at(c_seq, t))
        d_c = d_c + d_h * o_t * (1.0 - tanh_c * tanh_c)
        d_z = ops.concatenate(
            [
                d_c * c_tilde * i_t * (1.0 - i_t),
                d_c * c_tm1 * f_t * (1.0 - f_t),
                d_c * i_t * (1.0 - c_tilde * c_tilde),
                d_h * tanh_c * o_t * (1.0 - o_t),
            ],
            axis=-1,
        )
        d_z_seq = ops.slice_update(d_z_seq, (t, 0, 0), ops.expand_dims(d_z, 0))
        return ops.matmul(d_z, recurrent_kernel_t), d_c * f_t, d_z_seq

    # Carried back through the steps: dL/dh_{t-1} and dL/dC_{t-1}; dL/dz_t of every
    # step is written into one buffer (keras.ops.scan would also stack the carry).
    d_h_0, d_c_0, d_z = ops.fori_loop(0, steps, body, (grad_h, grad_c, ops.zeros_like(gate_seq)))
    d_inputs = ops.einsum("tbg,fg->btf", d_z, kernel)
    d_kernel = ops.einsum("btf,tbg->fg", inputs, d_z)
    d_recurrent_kernel = ops.einsum("tbu,tbg->ug", h_prev, d_z)
    d_bias = ops.sum(d_z, axis=(0, 1))
    return d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h_0, d_c_0


_COMPILED: dict[Any, Any] = {}

# With batch_shards=None, blocks of fewer rows than this are not worth a thread.
MIN_AUTO_SHARD_ROWS = 16
MAX_AUTO_SHARDS = 8


def _xla_recurrence(return_sequences: bool, shards: int) -> Any:
    """``(inputs, kernel, recurrent_kernel, bias, h_0, c_0) -> (output, h_T, C_T)`` via XLA.

    TensorFlow backend only. The forward and the backward loop are each one XLA
    program (TensorFlow cannot differentiate an XLA-compiled while loop from
    outside it), joined by a custom gradient, so users get the compiled loop
    without changing how they compile their model.

    The batch is cut into ``shards`` row blocks (fewer when it has fewer rows),
    each run by its own call of the same programs. The calls do not depend on
    each other, so TensorFlow's inter-op threads run them at the same time: a
    step's matmul is too small to keep several CPU cores busy, several
    independent loops are not. The rows do not interact, so the outputs are
    those of one loop over the whole batch; the weight gradients are the sum of
    the blocks' in a fixed order, so they are deterministic.
    """
    key = ("recurrence", return_sequences, shards)
    if key in _COMPILED:
        return _COMPILED[key]
    import tensorflow as tf

    forward = _jit(_forward_all_steps)
    backward = _jit(_backward_all_steps)

    @tf.custom_gradient
    def recurrence(inputs, kernel, recurrent_kernel, bias, h_0, c_0):
        # The gradient comes from `backward`; without stop_gradient TensorFlow would
        # also try to differentiate the compiled loop, which XLA cannot export.
        inputs, kernel, recurrent_kernel, bias, h_0, c_0 = (
            ops.stop_gradient(a) for a in (inputs, kernel, recurrent_kernel, bias, h_0, c_0)
        )
        split = _row_splitter(inputs, shards)
        blocks = list(zip(split(inputs), split(h_0), split(c_0), strict=True))
        saved = [forward(x, kernel, recurrent_kernel, bias, h, c) for x, h, c in blocks]
        # Time major (steps, batch, units): the blocks join on the batch axis; only
        # what is returned is joined (the backward pass keeps each block's own).
        h_last = _join([s[0][-1] for s in saved], axis=0)
        c_last = _join([s[1][-1] for s in saved], axis=0)
        if return_sequences:
            output = ops.transpose(_join([s[0] for s in saved], axis=1), (1, 0, 2))
        else:
            output = h_last

        def grad(grad_output, grad_h, grad_c):
            # Outputs nobody used arrive as None.
            grad_output = ops.zeros_like(output) if grad_output is None else grad_output
            grad_h = ops.zeros_like(h_0) if grad_h is None else grad_h
            grad_c = ops.zeros_like(c_0) if grad_c is None else grad_c
            parts = [
                backward(
                    x,
                    kernel,
                    recurrent_kernel,
                    h,
                    c,
                    s,
                    g_out,
                    g_h,
                    g_c,
                    return_sequences,
                )
                for (x, h, c), s, g_out, g_h, g_c in zip(
                    blocks, saved, split(grad_output), split(grad_h), split(grad_c), strict=True
                )
            ]
            d_inputs, d_kernel, d_recurrent, d_bias, d_h_0, d_c_0 = zip(*parts, strict=True)
            return (
                _join(d_inputs, axis=0),
                functools.reduce(operator.add, d_kernel),
                functools.reduce(operator.add, d_recurrent),
                functools.reduce(operator.add, d_bias),
                _join(d_h_0, axis=0),
                _join(d_c_0, axis=0),
            )

        return (output, h_last, c_last), grad

    _COMPILED[key] = recurrence
    return recurrence


def _row_splitter(inputs: Any, shards: int) -> Any:
    """A function cutting (batch, ...) tensors into the same ``shards`` row blocks.

    Block sizes differ by at most one row. With a batch size unknown while
    tracing, the sizes are computed when the graph runs (blocks may be empty).
    """
    import tensorflow as tf

    batch = inputs.shape[0]
    if batch is not None:
        shards = max(1, min(shards, batch))
    if shards == 1:
        return lambda tensor: [tensor]
    if batch is not None:
        sizes: Any = [(batch + shards - 1 - k) // shards for k in range(shards)]
    else:
        batch = tf.shape(inputs)[0]
        sizes = (batch + shards - 1 - tf.range(shards)) // shards
    return lambda tensor: tf.split(tensor, sizes, axis=0, num=shards)


def _join(blocks: Any, axis: int) -> Any:
    return blocks[0] if len(blocks) == 1 else ops.concatenate(list(blocks), axis=axis)


def default_batch_shards() -> int:
    """Row blocks per batch that ``GateLSTM(batch_shards=None)`` aims for.

    One per CPU core this process may use, at most ``MAX_AUTO_SHARDS``; 1 when
    TensorFlow sees a GPU, where one loop over the whole batch is faster.
    """
    import os

    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_AUTO_SHARDS, cores or 1))


def _jit(function: Any) -> Any:
    """``function`` compiled by XLA (TensorFlow backend), one compiled copy per process.

    The weights are arguments, not captured variables, so every GateLSTM (a new
    model per walk-forward fold and seed) shares one trace per input signature,
    and XLA compiles each (shapes, dtype) once per process.
    """
    if function not in _COMPILED:
        import tensorflow as tf

        _COMPILED[function] = tf.function(function, jit_compile=True, autograph=False)
    return _COMPILED[function]


def _trace_count() -> int:
    """How many times the XLA programs have been traced in this process (for tests)."""
    return sum(
        f.experimental_get_tracing_count()
        for f in _COMPILED.values()
        if hasattr(f, "experimental_get_tracing_count")
    )


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
        jit_compile: On the TensorFlow backend, run the loop as two XLA programs,
            the forward pass and backpropagation through time written out from
            the same equations (checked against autodiff in the tests), whatever
            the model's own ``compile`` settings. Masked inputs, sequences of
            unknown length and other backends use ``keras.ops.scan`` with
            automatic differentiation.
        batch_shards: With the XLA loop, cut each batch into this many row
            blocks whose loops run at the same time on TensorFlow's inter-op
            threads; the result is the same as one loop. None: one block per
            CPU core (at most 8, and at least 16 rows each), or 1 when
            TensorFlow sees a GPU. 1 runs one loop over the whole batch.
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
        batch_shards: int | None = None,
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
        self.batch_shards = None if batch_shards is None else int(batch_shards)
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
        kernel = ops.cast(self.kernel, dtype)
        recurrent_kernel = ops.cast(self.recurrent_kernel, dtype)
        bias = ops.cast(self.bias, dtype)
        compiled = (
            self.jit_compile
            and keras.backend.backend() == "tensorflow"
            and mask is None
            and inputs.shape[1] is not None
        )
        if compiled and collect_gates:
            seqs = _jit(_forward_all_steps)(inputs, kernel, recurrent_kernel, bias, h_0, c_0)
            return _batch_major_gates(seqs)
        if compiled:
            recurrence = _xla_recurrence(self.return_sequences, self._shards(inputs.shape[0]))
            return recurrence(inputs, kernel, recurrent_kernel, bias, h_0, c_0)
        return _recurrence(
            inputs,
            kernel,
            recurrent_kernel,
            bias,
            h_0,
            c_0,
            mask,
            self.return_sequences,
            collect_gates,
        )

    def _shards(self, batch: int | None) -> int:
        if self.batch_shards is not None:
            return self.batch_shards
        shards = default_batch_shards()
        if batch is not None:
            shards = min(shards, batch // MIN_AUTO_SHARD_ROWS)
        return max(1, shards)

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
                "batch_shards": self.batch_shards,
                "seed": self.seed,
            }
        )
        return config
