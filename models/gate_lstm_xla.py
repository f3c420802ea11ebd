"""The fast path of ``GateLSTM`` on TensorFlow: an XLA loop with a hand-derived backward pass.

``GateLSTM.inner_loop`` calls ``lstm`` first, as ``keras.layers.LSTM`` calls
``keras.backend.lstm``: it raises ``NotImplementedError`` where it cannot run
(other backends, masks, sequences of unknown length) and the layer falls back
to Keras's generic RNN loop over ``GateLSTMCell``.

The forward pass is ``models.gate_lstm_cell.scan_steps``, the cell's own step
function over time, compiled by XLA; it keeps every step's gates, from which
``_backward_all_steps`` runs backpropagation through time written out from the
six equations. A ``tf.custom_gradient`` joins the two, so users get the
compiled loop without changing how they compile their model. The weights are
arguments, not captured variables: one trace and one XLA compilation per input
signature serve every layer in the process (a new model per walk-forward fold
and seed). Each batch can be cut into row blocks whose loops run at the same
time (``shards``), since one step's matmul is too small to keep several CPU
cores busy.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import keras
from keras import ops

from models.gate_lstm_cell import scan_steps
from models.row_blocks import (  # noqa: F401 (gate_lstm reads them here)
    MAX_AUTO_SHARDS,
    MIN_AUTO_SHARD_ROWS,
    default_batch_shards,
)


def lstm(
    sequences: Any,
    h_0: Any,
    c_0: Any,
    mask: Any,
    kernel: Any,
    recurrent_kernel: Any,
    bias: Any,
    *,
    return_sequences: bool,
    go_backwards: bool,
    shards: int,
) -> tuple[Any, Any, list[Any]]:
    """``GateLSTM`` over (batch, steps, features) ``sequences``, for ``RNN.inner_loop``.

    Returns ``(last_output, outputs, [h_T, C_T])`` as ``keras.backend.rnn``
    does (``outputs`` is the last output unless ``return_sequences``), with
    the weights already cast to the compute dtype. Raises
    ``NotImplementedError`` when the generic loop has to run instead.
    """
    _check_supported(sequences, mask)
    if go_backwards:
        sequences = ops.flip(sequences, axis=1)
    recurrence = _xla_recurrence(return_sequences, shards)
    output, h_t, c_t = recurrence(sequences, kernel, recurrent_kernel, bias, h_0, c_0)
    return (h_t if return_sequences else output), output, [h_t, c_t]


def gate_sequences(
    inputs: Any, kernel: Any, recurrent_kernel: Any, bias: Any, h_0: Any, c_0: Any
) -> tuple[Any, Any, Any]:
    """Every step's time-major ``(h, C, gates)`` from the compiled forward pass.

    Raises ``NotImplementedError`` where ``lstm`` would.
    """
    _check_supported(inputs, None)
    return _jit(_forward_all_steps)(inputs, kernel, recurrent_kernel, bias, h_0, c_0)


def supported(sequences: Any, mask: Any) -> bool:
    """Whether ``lstm`` can run on these inputs here (it raises where it cannot)."""
    try:
        _check_supported(sequences, mask)
    except NotImplementedError:
        return False
    return True


def _check_supported(sequences: Any, mask: Any) -> None:
    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError("GateLSTM's XLA loop runs on the TensorFlow backend only")
    if mask is not None:
        raise NotImplementedError("masked sequences run in Keras's generic loop")
    if sequences.shape[1] is None:
        raise NotImplementedError("sequences of unknown length run in Keras's generic loop")


def _forward_all_steps(
    inputs: Any, kernel: Any, recurrent_kernel: Any, bias: Any, h_0: Any, c_0: Any
) -> tuple[Any, ...]:
    """Every step's ``(h, C, gates)``, time major, from ``scan_steps``."""
    # One matmul for the input half of every gate at every step, outside the
    # sequential loop: the loop is left with only the (units x 4*units) matmul.
    z_x = ops.transpose(ops.matmul(inputs, kernel) + bias, (1, 0, 2))
    return scan_steps(z_x, recurrent_kernel, h_0, c_0)


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

    ``keras.ops.fori_loop`` writes each step's dL/dz into one buffer;
    ``keras.ops.scan`` would also stack the carried dL/dh and dL/dC.
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


def trace_count() -> int:
    """How many times the XLA programs have been traced in this process (for tests)."""
    return sum(
        f.experimental_get_tracing_count()
        for f in _COMPILED.values()
        if hasattr(f, "experimental_get_tracing_count")
    )
