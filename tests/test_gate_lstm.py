"""GateLSTM against its reference twins: keras.layers.LSTM and a NumPy loop of the equations."""

from __future__ import annotations

import doctest
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from models import gate_lstm, gate_lstm_xla
from models.gate_lstm import GATE_NAMES, GateLSTM, GateLSTMCell

TOL = 1e-5

# The three ways GateLSTM can run a sequence: keras.ops.scan with autodiff, one XLA
# loop with the hand-written backward pass, and the XLA loop over row blocks run
# side by side (6 rows in 4 blocks: 2, 2, 1, 1, so uneven blocks are covered).
LOOPS = {
    "scan": {"jit_compile": False},
    "xla": {"jit_compile": True, "batch_shards": 1},
    "xla-blocks": {"jit_compile": True, "batch_shards": 4},
}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow


def numpy_step(
    x_t: np.ndarray,
    h_tm1: np.ndarray,
    c_tm1: np.ndarray,
    kernel: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray,
) -> dict[str, np.ndarray]:
    """The six equations for one step, in float64, with W_g·[h_{t-1}, x_t] literally."""
    # W_g acts on the concatenation [h_{t-1}, x_t]; Keras stores its two blocks apart.
    w = np.concatenate([recurrent_kernel, kernel], axis=0).astype(np.float64)
    hx = np.concatenate([h_tm1, x_t], axis=1).astype(np.float64)
    z_i, z_f, z_c, z_o = np.split(hx @ w + bias.astype(np.float64), 4, axis=1)  # i, f, C, o
    f_t = _sigmoid(z_f)
    i_t = _sigmoid(z_i)
    c_tilde = np.tanh(z_c)
    c_t = f_t * c_tm1.astype(np.float64) + i_t * c_tilde
    o_t = _sigmoid(z_o)
    h_t = o_t * np.tanh(c_t)
    return dict(zip(GATE_NAMES, (i_t, f_t, c_tilde, o_t, c_t, h_t), strict=True))


def numpy_lstm(
    x: np.ndarray, kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray
) -> dict[str, np.ndarray]:
    """``numpy_step`` over every step of ``x`` from zero states: (batch, steps, units) each."""
    batch, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    step = {"h": np.zeros((batch, units)), "c": np.zeros((batch, units))}
    out = {name: np.zeros((batch, steps, units)) for name in GATE_NAMES}
    for t in range(steps):
        step = numpy_step(x[:, t, :], step["h"], step["c"], kernel, recurrent_kernel, bias)
        for name in GATE_NAMES:
            out[name][:, t, :] = step[name]
    return out


@pytest.fixture(autouse=True)
def _seeded_weights() -> None:
    # Layers built here draw their weights from Keras's global generator: seed it, so
    # every test sees the same weights whichever tests ran before it in the process
    # (under pytest-xdist the order differs, and float32 gradient comparisons with
    # unlucky weights can land just outside their tolerance).
    keras.utils.set_random_seed(0)


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(6, 9, 4)).astype("float32")


def _random_bias(layer: keras.layers.Layer, seed: int = 1) -> None:
    # A zero bias would hide a gate-order mistake in the bias; give every gate its own.
    kernel, recurrent_kernel, bias = layer.get_weights()
    bias = np.random.default_rng(seed).normal(scale=0.5, size=bias.shape).astype("float32")
    layer.set_weights([kernel, recurrent_kernel, bias])


def _outputs_and_grads(
    layer: keras.layers.Layer, x: np.ndarray, initial_state: list | None = None, training=True
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every output of ``layer`` (or model) on ``x``, and the gradients of a loss that
    reaches each output, with respect to ``x``, the initial states and the weights."""
    x = tf.constant(x)
    states = [tf.constant(s) for s in initial_state or []]
    kwargs = {"initial_state": states} if states else {}
    probes = np.random.default_rng(3)
    with tf.GradientTape() as tape:
        tape.watch([x, *states])
        outputs = tf.nest.flatten(layer(x, training=training, **kwargs))
        loss = tf.add_n(
            [tf.reduce_sum(o * probes.normal(size=o.shape).astype("float32")) for o in outputs]
        )
    grads = tape.gradient(loss, [x, *states, *layer.trainable_weights])
    return [o.numpy() for o in outputs], [g.numpy() for g in grads]


def _assert_twins(ours: tuple[list, list], theirs: tuple[list, list]) -> None:
    """The same outputs (within TOL) and finite gradients (within 1e-4) as the twin's."""
    (outputs, grads), (ref_outputs, ref_grads) = ours, theirs
    for k, (a, b) in enumerate(zip(outputs, ref_outputs, strict=True)):
        assert a.shape == b.shape, f"output {k}"
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0, err_msg=f"output {k}")
    for k, (a, b) in enumerate(zip(grads, ref_grads, strict=True)):
        assert np.all(np.isfinite(a)), f"gradient {k}"
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4, err_msg=f"gradient {k}")


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_matches_keras_lstm_with_copied_weights(x, return_sequences, loop):
    ref = keras.layers.LSTM(5, return_sequences=return_sequences, return_state=True)
    ref(x)
    _random_bias(ref)
    layer = GateLSTM(5, return_sequences=return_sequences, return_state=True, **LOOPS[loop])
    layer(x)
    layer.set_weights(ref.get_weights())
    ours, theirs = layer(x), ref(x)
    assert len(ours) == 3
    for name, a, b in zip(("output", "h", "c"), ours, theirs, strict=True):
        assert a.shape == b.shape, name
        assert np.max(np.abs(np.asarray(a) - np.asarray(b))) <= TOL, name
    plain = GateLSTM(5, return_sequences=return_sequences, **LOOPS[loop])
    plain(x)
    plain.set_weights(ref.get_weights())
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(theirs[0]), atol=TOL, rtol=0)


def test_weights_are_named_and_shaped_like_keras():
    layer = GateLSTM(3)
    layer.build((None, 7, 2))
    assert [(w.path.split("/")[-1], tuple(w.shape)) for w in layer.weights] == [
        ("kernel", (2, 12)),
        ("recurrent_kernel", (3, 12)),
        ("bias", (12,)),
    ]
    # unit_forget_bias: the forget block (second of i, f, C, o) starts at one.
    np.testing.assert_array_equal(layer.get_weights()[2], [0] * 3 + [1] * 3 + [0] * 6)
    no_forget_bias = GateLSTM(3, unit_forget_bias=False)
    no_forget_bias.build((None, 7, 2))
    np.testing.assert_array_equal(no_forget_bias.get_weights()[2], np.zeros(12))


@pytest.mark.parametrize("scale", [1.0, 50.0])
def test_matches_numpy_equations_including_saturated_gates(x, scale):
    x = x * np.float32(scale)  # x50 drives the gates into saturation (sigmoid 0/1, tanh +-1)
    layer = GateLSTM(5, return_sequences=True)
    layer(x)
    _random_bias(layer)
    ref = numpy_lstm(x, *layer.get_weights())
    np.testing.assert_allclose(np.asarray(layer(x)), ref["h"], atol=TOL, rtol=0)
    gates = layer.gate_activations(x)
    assert sorted(gates) == sorted(GATE_NAMES)
    for name in GATE_NAMES:
        assert gates[name].shape == (6, 9, 5), name
        np.testing.assert_allclose(gates[name], ref[name], atol=TOL, rtol=0, err_msg=name)
    if scale > 1:
        assert np.mean(np.abs(ref["f"] - 0.5) > 0.49) > 0.5, "input did not saturate the gates"
    assert np.all(np.isfinite(np.asarray(layer(x))))


def test_gate_activations_come_from_the_same_step_as_call(x):
    layer = GateLSTM(5, return_state=True)
    output, h, c = layer(x)
    gates = layer.gate_activations(x)
    np.testing.assert_array_equal(gates["h"][:, -1], np.asarray(output))
    np.testing.assert_array_equal(gates["h"][:, -1], np.asarray(h))
    np.testing.assert_array_equal(gates["c"][:, -1], np.asarray(c))
    unbuilt = GateLSTM(2)
    assert unbuilt.gate_activations(x)["f"].shape == (6, 9, 2)


def test_unknown_number_of_steps_runs_the_same_maths(x):
    inputs = keras.Input((None, 4))
    layer = GateLSTM(5, return_sequences=True, return_state=True)
    model = keras.Model(inputs, layer(inputs))
    _random_bias(layer)
    ref = numpy_lstm(x, *layer.get_weights())
    output, h, c = model(x)
    np.testing.assert_allclose(np.asarray(output), ref["h"], atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(c), ref["c"][:, -1], atol=TOL, rtol=0)
    assert model.output_shape[0] == (None, None, 5)


def _masked_model(layer: keras.layers.Layer) -> keras.Model:
    inputs = keras.Input((9, 4))
    return keras.Model(inputs, layer(keras.layers.Masking(mask_value=0.0)(inputs)))


@pytest.mark.parametrize("return_sequences", [False, True])
def test_masked_steps_carry_state_like_keras(x, return_sequences):
    x = x.copy()
    x[:, -3:, :] = 0.0  # right padding
    x[1, 2, :] = 0.0  # a masked step in the middle
    ref = _masked_model(keras.layers.LSTM(5, return_sequences=return_sequences))
    ours = _masked_model(GateLSTM(5, return_sequences=return_sequences))
    _random_bias(ref.layers[-1])
    ours.set_weights(ref.get_weights())
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), atol=TOL, rtol=0)


def test_initial_state_matches_keras(x):
    rng = np.random.default_rng(2)
    h_0, c_0 = (rng.normal(size=(6, 5)).astype("float32") for _ in range(2))
    ref = keras.layers.LSTM(5, return_sequences=True)
    ref(x)
    layer = GateLSTM(5, return_sequences=True)
    layer(x)
    layer.set_weights(ref.get_weights())
    np.testing.assert_allclose(
        np.asarray(layer(x, initial_state=[h_0, c_0])),
        np.asarray(ref(x, initial_state=[h_0, c_0])),
        atol=TOL,
        rtol=0,
    )


def test_stacked_layers_match_stacked_keras_lstm(x):
    def stacked(layer_cls: type) -> keras.Model:
        inputs = keras.Input((9, 4))
        hidden = layer_cls(6, return_sequences=True)(inputs)
        return keras.Model(inputs, keras.layers.Dense(1)(layer_cls(3)(hidden)))

    ref, ours = stacked(keras.layers.LSTM), stacked(GateLSTM)
    ours.set_weights(ref.get_weights())
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), atol=TOL, rtol=0)
    _assert_twins(_outputs_and_grads(ours, x), _outputs_and_grads(ref, x))


def test_stacked_cells_match_keras_stacked_cells(x):
    ours = keras.layers.RNN([GateLSTMCell(6), GateLSTMCell(3)], return_sequences=True)
    ref = keras.layers.RNN([keras.layers.LSTMCell(6), keras.layers.LSTMCell(3)], True)
    ref(x)
    ours(x)
    ours.set_weights(ref.get_weights())
    _assert_twins(_outputs_and_grads(ours, x), _outputs_and_grads(ref, x))


def test_cell_step_matches_numpy_equations_on_awkward_inputs():
    rng = np.random.default_rng(4)
    x_t = rng.normal(size=(6, 4)).astype("float32")
    x_t[1] = [1e4, -1e4, 1e4, -1e4]  # every gate saturated: sigmoid exactly 0 or 1
    x_t[2] = [1e-38, -1e-38, 1e-45, 0.0]  # subnormal float32
    x_t[3] = 0.0
    h_tm1 = rng.uniform(-1, 1, size=(6, 5)).astype("float32")
    c_tm1 = rng.normal(size=(6, 5)).astype("float32")
    c_tm1[4] = [1e4, -1e4, 3e3, -3e3, 0.0]  # a cell state far from the usual range
    cell = GateLSTMCell(5)
    assert cell.state_size == [5, 5] and cell.output_size == 5
    cell.build((None, 4))
    _random_bias(cell)
    ref = numpy_step(x_t, h_tm1, c_tm1, *cell.get_weights())
    output, (h_t, c_t) = cell(x_t, [h_tm1, c_tm1])
    np.testing.assert_array_equal(np.asarray(output), np.asarray(h_t))
    np.testing.assert_allclose(np.asarray(h_t), ref["h"], atol=TOL, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(c_t), ref["c"], atol=TOL, rtol=1e-5)
    assert np.all(np.isin(ref["f"][1], [0.0, 1.0])), "the large row did not saturate"


@pytest.mark.parametrize("return_sequences", [False, True])
def test_rnn_of_the_cell_matches_keras_lstm(x, return_sequences):
    x = x * np.float32(50.0)  # saturating
    rng = np.random.default_rng(2)
    state = [rng.normal(size=(6, 5)).astype("float32") for _ in range(2)]
    ref = keras.layers.LSTM(5, return_sequences=return_sequences, return_state=True)
    ours = keras.layers.RNN(GateLSTMCell(5), return_sequences=return_sequences, return_state=True)
    ref(x)
    ours(x)
    _random_bias(ref)
    ours.set_weights(ref.get_weights())
    _assert_twins(_outputs_and_grads(ours, x, state), _outputs_and_grads(ref, x, state))


@pytest.mark.parametrize("loop", ["scan", "xla-blocks"])
@pytest.mark.parametrize(
    "merge_mode, return_state, masked",
    [("concat", False, False), ("sum", True, False), ("concat", False, True)],
)
def test_bidirectional_matches_keras(x, loop, merge_mode, return_state, masked):
    x = x.copy()
    if masked:
        x[:, -2:, :] = 0.0
        x[1, 3, :] = 0.0

    def bidirectional(layer: keras.layers.Layer) -> keras.Model:
        inputs = keras.Input((9, 4))
        hidden = keras.layers.Masking(0.0)(inputs) if masked else inputs
        wrapped = keras.layers.Bidirectional(layer, merge_mode=merge_mode)
        return keras.Model(inputs, wrapped(hidden))

    options = {"return_sequences": not return_state, "return_state": return_state}
    ref = bidirectional(keras.layers.LSTM(5, **options))
    ours = bidirectional(GateLSTM(5, **options, **LOOPS[loop]))
    _random_bias(ref.layers[-1].forward_layer, seed=1)
    _random_bias(ref.layers[-1].backward_layer, seed=2)
    ours.set_weights(ref.get_weights())
    _assert_twins(_outputs_and_grads(ours, x), _outputs_and_grads(ref, x))


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("option", ["go_backwards", "stateful"])
def test_go_backwards_and_stateful_match_keras(x, loop, option):
    ref = keras.layers.LSTM(5, return_sequences=True, return_state=True, **{option: True})
    ours = GateLSTM(5, return_sequences=True, return_state=True, **{option: True}, **LOOPS[loop])
    ref(x)
    ours(x)
    _random_bias(ref)
    ours.set_weights(ref.get_weights())
    if option == "stateful":
        ref.reset_state()
        ours.reset_state()
    for _ in range(2):  # stateful: the second call starts where the first ended
        _assert_twins(_outputs_and_grads(ours, x), _outputs_and_grads(ref, x))


def test_the_fast_path_runs_where_it_can():
    x = np.ones((3, 5, 7), "float32")  # a shape no other test uses: the first call traces
    traced = gate_lstm_xla.trace_count()
    GateLSTM(2, jit_compile=False)(x)
    GateLSTM(2)(x, mask=np.ones((3, 5), bool))
    keras.layers.RNN(GateLSTMCell(2))(x)
    assert gate_lstm_xla.trace_count() == traced, "only the generic loop should have run"
    GateLSTM(2)(x)
    assert gate_lstm_xla.trace_count() > traced, "the XLA loop did not run"


def test_docstring_examples_run():
    result = doctest.testmod(gate_lstm, extraglobs={"np": np, "keras": keras})
    assert result.attempted >= 3 and result.failed == 0


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_gradients_are_finite_and_match_keras(x, return_sequences, loop):
    # Saturating inputs, and a loss that reaches the output, both returned states,
    # the inputs and the initial state: every gradient the layer hands back.
    x = tf.constant(x * np.float32(50.0))
    rng = np.random.default_rng(3)
    h_0, c_0 = (tf.constant(rng.normal(size=(6, 5)).astype("float32")) for _ in range(2))
    ref = keras.layers.LSTM(5, return_sequences=return_sequences, return_state=True)
    ref(x)
    _random_bias(ref)
    layer = GateLSTM(5, return_sequences=return_sequences, return_state=True, **LOOPS[loop])
    layer(x)
    layer.set_weights(ref.get_weights())
    probe = tf.constant(rng.normal(size=(6, 9, 5) if return_sequences else (6, 5)), "float32")

    def grads(lstm: keras.layers.Layer) -> list[np.ndarray]:
        with tf.GradientTape() as tape:
            tape.watch([x, h_0, c_0])
            output, h, c = lstm(x, initial_state=[h_0, c_0], training=True)
            loss = tf.reduce_sum(output * probe) + tf.reduce_sum(h**2) - tf.reduce_sum(c)
        found = tape.gradient(loss, [x, h_0, c_0, *lstm.trainable_weights])
        return [g.numpy() for g in found]

    names = ["inputs", "h_0", "c_0", "kernel", "recurrent_kernel", "bias"]
    for name, g, r in zip(names, grads(layer), grads(ref), strict=True):
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-4, err_msg=name)


def test_gradient_when_only_the_last_state_is_used(x):
    layer = GateLSTM(5, return_sequences=True, return_state=True)
    ref = keras.layers.LSTM(5, return_sequences=True, return_state=True)
    ref(x)
    layer(x)
    layer.set_weights(ref.get_weights())

    def grads(lstm: keras.layers.Layer) -> list[np.ndarray]:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(lstm(x)[2])  # the output sequence and h are unused
        return [g.numpy() for g in tape.gradient(loss, lstm.trainable_weights)]

    for g, r in zip(grads(layer), grads(ref), strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4)


def _regression_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 12, 3)).astype("float32")
    return x, x[:, -4:, 0].sum(axis=1, keepdims=True)


def _compiled_model(seed: int, batch_shards: int | None = None) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((12, 3)),
            GateLSTM(8, dropout=0.1, batch_shards=batch_shards),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    return model


def _fit(
    seed: int, epochs: int, batch_shards: int | None = None
) -> tuple[keras.Model, list[float]]:
    model = _compiled_model(seed, batch_shards)
    x, y = _regression_data()
    history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=True, verbose=0)
    return model, history.history["loss"]


def test_training_lowers_the_loss():
    x, y = _regression_data()
    model = _compiled_model(seed=0)
    before = float(model.evaluate(x, y, verbose=0))
    model.fit(x, y, batch_size=16, epochs=4, verbose=0)
    after = float(model.evaluate(x, y, verbose=0))
    assert after < 0.7 * before, (before, after)


def _run_python(script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_training_is_deterministic_with_op_determinism():
    # Op determinism is process-wide and cannot be switched off again, so it gets
    # its own interpreter rather than leaking into the rest of the suite (one for both
    # settings: starting TensorFlow is most of its time). Row blocks (batch_shards=3)
    # run at the same time, but their weight gradients add up in one order.
    done = _run_python(
        """
        import numpy as np, tensorflow as tf
        from tests.test_gate_lstm import _fit
        tf.config.experimental.enable_op_determinism()
        for shards in (1, 3):
            first, loss_1 = _fit(seed=7, epochs=1, batch_shards=shards)
            second, loss_2 = _fit(seed=7, epochs=1, batch_shards=shards)
            assert loss_1 == loss_2, (shards, loss_1, loss_2)
            for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
                np.testing.assert_array_equal(a, b)
            third, loss_3 = _fit(seed=8, epochs=1, batch_shards=shards)
            assert loss_3 != loss_1, f"the seed does not reach the model ({shards} shards)"
            print(f"identical with {shards} shard(s)")
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "identical with 1 shard(s)" in done.stdout
    assert "identical with 3 shard(s)" in done.stdout


def test_dropout_only_while_training(x):
    layer = GateLSTM(5, dropout=0.5, seed=3)
    plain = GateLSTM(5)
    layer(x)
    plain(x)
    plain.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(plain(x)))
    assert np.max(np.abs(np.asarray(layer(x, training=True)) - np.asarray(plain(x)))) > 1e-3


def test_regularizers_add_losses(x):
    layer = GateLSTM(5, kernel_regularizer="l2", recurrent_regularizer="l1", bias_regularizer="l2")
    layer(x)
    assert len(layer.losses) == 3
    assert all(float(loss) > 0 for loss in layer.losses)


def test_get_config_round_trips():
    layer = GateLSTM(
        7,
        return_sequences=True,
        return_state=True,
        dropout=0.25,
        unit_forget_bias=False,
        kernel_initializer="he_normal",
        recurrent_regularizer=keras.regularizers.L2(0.01),
        bias_constraint="non_neg",
        jit_compile=False,
        batch_shards=3,
        seed=11,
        name="gates",
    )
    config = layer.get_config()
    clone = GateLSTM.from_config(config)
    assert clone.get_config() == config
    assert clone.units == 7 and clone.return_state and clone.dropout == 0.25
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(revived, GateLSTM) and revived.get_config() == config
    cell = GateLSTMCell(4, dropout=0.2, unit_forget_bias=False, bias_regularizer="l1", seed=2)
    cell_config = cell.get_config()
    assert GateLSTMCell.from_config(cell_config).get_config() == cell_config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cell))
    assert isinstance(revived, GateLSTMCell) and revived.get_config() == cell_config


def _small_model(kind: str = "layer", lstm=GateLSTM, cell=GateLSTMCell) -> keras.Model:
    """Two recurrent layers and a Dense head; ``lstm`` and ``cell`` swap in Keras's twins."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((9, 4))
    if kind == "layer":
        first = lstm(6, return_sequences=True, kernel_regularizer="l2")
        second = lstm(3, dropout=0.1)
    elif kind == "cell":
        first = keras.layers.RNN(cell(6, kernel_regularizer="l2"), return_sequences=True)
        second = keras.layers.RNN(cell(3, dropout=0.1))
    else:
        first = keras.layers.Bidirectional(lstm(6, return_sequences=True), merge_mode="sum")
        second = keras.layers.Bidirectional(lstm(3, dropout=0.1))
    return keras.Model(inputs, keras.layers.Dense(1)(second(first(inputs))))


@pytest.mark.parametrize("kind", ["layer", "cell", "bidirectional"])
def test_save_and_load_in_this_and_a_fresh_process(x, tmp_path, kind):
    model = _small_model(kind)
    path = tmp_path / "model.keras"
    model.save(path)
    expected = np.asarray(model(x))
    np.save(tmp_path / "x.npy", x)

    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded(x)), expected)

    # A fresh interpreter only knows GateLSTM through the registration on import.
    done = _run_python(
        f"""
        import numpy as np, keras
        import models.gate_lstm  # registers gatecast>GateLSTM and gatecast>GateLSTMCell
        from tests.test_gate_lstm import _outputs_and_grads
        model = keras.saving.load_model({str(path)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "out.npy")!r}, np.asarray(model(x)))
        outputs, grads = _outputs_and_grads(model, x, training=False)
        np.savez({str(tmp_path / "twin.npz")!r}, *outputs, *grads)
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
    twin = _small_model(kind, keras.layers.LSTM, keras.layers.LSTMCell)
    twin.set_weights(model.get_weights())
    ref = _outputs_and_grads(twin, x, training=False)
    with np.load(tmp_path / "twin.npz") as found:
        arrays = [found[f"arr_{k}"] for k in range(len(found.files))]
    _assert_twins((arrays[: len(ref[0])], arrays[len(ref[0]) :]), ref)


def _as_written_before_the_cell(source: Path, target: Path) -> None:
    """Rewrite a .keras file into the layout of the GateLSTM that had no cell: its three
    weights on the layer (layers/<name>/vars), no RNN keys in its config."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] == "GateLSTM":
                        for key in ("go_backwards", "stateful", "unroll", "zero_output_for_mask"):
                            del layer["config"][key]
                data = json.dumps(config).encode()
            elif item.filename == "model.weights.h5":
                buffer = io.BytesIO(data)
                with h5py.File(buffer, "r+") as weights:
                    for name in weights["layers"]:
                        if f"{name}/cell" in weights["layers"]:
                            layer = weights["layers"][name]
                            del layer["vars"]
                            layer.move("cell/vars", "vars")
                            del layer["cell"]
                data = buffer.getvalue()
            new.writestr(item, data)


def test_files_written_before_the_cell_still_load(x, tmp_path):
    model = _small_model()
    expected = np.asarray(model(x))
    model.save(tmp_path / "new.keras")
    _as_written_before_the_cell(tmp_path / "new.keras", tmp_path / "old.keras")
    with zipfile.ZipFile(tmp_path / "old.keras") as old, old.open("model.weights.h5") as file:
        layer = h5py.File(io.BytesIO(file.read()), "r")["layers/gate_lstm"]
        assert "cell" not in layer and sorted(layer["vars"]) == ["0", "1", "2"]
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x)), expected)


@pytest.mark.parametrize("units", [0, -3, 2.5, True, "8"])
def test_bad_units_are_a_clear_error(units):
    with pytest.raises(ValueError, match="units.*positive integer"):
        GateLSTM(units)
    with pytest.raises(ValueError, match="GateLSTMCell.*units.*positive integer"):
        GateLSTMCell(units)


@pytest.mark.parametrize("batch_shards", [0, -1, 1.5, True])
def test_bad_batch_shards_is_a_clear_error(batch_shards):
    with pytest.raises(ValueError, match="batch_shards.*positive integer or None"):
        GateLSTM(4, batch_shards=batch_shards)


def test_row_blocks_work_with_a_batch_size_unknown_while_tracing(x):
    # Keras retraces with an unknown batch size for a last, smaller batch; then the
    # block sizes are computed when the graph runs, including empty blocks.
    whole, blocks = (
        GateLSTM(5, return_sequences=True, batch_shards=1),
        GateLSTM(5, return_sequences=True, batch_shards=4),
    )
    whole(x)
    blocks(x)
    blocks.set_weights(whole.get_weights())
    spec = tf.TensorSpec((None, *x.shape[1:]), tf.float32)

    def traced(layer: keras.layers.Layer) -> tf.types.experimental.ConcreteFunction:
        @tf.function(input_signature=[spec])
        def run(inputs):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                loss = tf.reduce_sum(layer(inputs) ** 2)
            return loss, tape.gradient(loss, [inputs, *layer.trainable_weights])

        return run

    for rows in (6, 5, 2):  # 2 rows in 4 blocks leaves two empty
        expected = traced(whole)(x[:rows])
        found = traced(blocks)(x[:rows])
        for a, b in zip(tf.nest.flatten(found), tf.nest.flatten(expected), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def test_automatic_row_blocks_follow_the_cores_and_the_batch(monkeypatch):
    monkeypatch.setattr(gate_lstm_xla, "default_batch_shards", lambda: 4)
    layer = GateLSTM(4)
    assert layer._shards(64) == 4
    assert layer._shards(40) == 2  # at least MIN_AUTO_SHARD_ROWS (16) rows a block
    assert layer._shards(8) == 1
    assert layer._shards(None) == 4
    assert GateLSTM(4, batch_shards=3)._shards(64) == 3


def test_bad_dropout_is_a_clear_error():
    with pytest.raises(ValueError, match="dropout"):
        GateLSTM(4, dropout=1.0)


@pytest.mark.parametrize("shape", [(6, 4), (2, 6, 9, 4)])
def test_wrong_input_rank_is_a_clear_error(shape):
    with pytest.raises(ValueError, match=r"\(batch, steps, features\)"):
        GateLSTM(4)(np.zeros(shape, dtype="float32"))
    with pytest.raises(ValueError, match=r"\(batch, steps, features\)"):
        GateLSTM(4)(keras.Input(shape[1:]))


def test_bad_initial_state_is_a_clear_error(x):
    with pytest.raises(ValueError, match="initial_state"):
        GateLSTM(5)(x, initial_state=np.zeros((6, 5), dtype="float32"))


def test_mixed_precision_builds_runs_and_follows_the_policy(x):
    float32 = GateLSTM(5, return_sequences=True)
    expected = np.asarray(float32(x))
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        inputs = keras.Input((9, 4))
        layer = GateLSTM(5, return_sequences=True)
        model = keras.Model(inputs, keras.layers.Dense(1, dtype="float32")(layer(inputs)))
        model.compile(optimizer="adam", loss="mse")
        assert layer.compute_dtype == "float16"
        assert all(w.dtype == "float32" for w in layer.weights)
        layer.set_weights(float32.get_weights())
        out = layer(x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        np.testing.assert_allclose(np.asarray(out, dtype="float32"), expected, atol=1e-2)
        gates = layer.gate_activations(x)
        assert gates["f"].dtype == np.float16
        history = model.fit(x, np.zeros((6, 9, 1), "float32"), epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_fresh_layers_reuse_the_compiled_programs():
    # A walk-forward builds a new model per fold and seed: with the weights passed
    # as arguments, a fresh layer of the same shapes traces (and compiles) nothing.
    x, y = _regression_data()
    _fit(seed=1, epochs=1)
    traced = gate_lstm_xla.trace_count()
    assert traced > 0
    model, _ = _fit(seed=2, epochs=1)
    model.predict(x, batch_size=16, verbose=0)
    assert gate_lstm_xla.trace_count() == traced
    wider = keras.Sequential([keras.Input((12, 3)), GateLSTM(9), keras.layers.Dense(1)])
    wider.compile(optimizer="adam", loss="mse")
    wider.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert gate_lstm_xla.trace_count() > traced, "a new shape must be traced: the count can move"


def test_runs_on_jax_without_tensorflow():
    # On another backend the layer runs Keras's generic loop over the cell; nothing
    # on that path may need TensorFlow (a GPU machine may have only JAX or PyTorch).
    done = _run_python(
        """
        import os, sys
        sys.modules["tensorflow"] = None  # any import of TensorFlow fails
        os.environ["KERAS_BACKEND"] = "jax"
        import jax, jax.numpy as jnp, keras, numpy as np
        from models.gate_lstm import GateLSTM
        assert keras.backend.backend() == "jax"
        rng = np.random.default_rng(0)
        x = rng.normal(size=(6, 9, 3)).astype("float32")
        ref = keras.layers.LSTM(5, return_sequences=True, use_cudnn=False)
        ref(x)
        k, rk, b = ref.get_weights()
        ref.set_weights([k, rk, rng.normal(scale=0.5, size=b.shape).astype("float32")])
        ours = GateLSTM(5, return_sequences=True)
        ours(x)
        ours.set_weights(ref.get_weights())
        def grads(layer):
            fixed = [v.value for v in layer.non_trainable_variables]
            def loss(w):
                out, _ = layer.stateless_call(w, fixed, x, training=True)
                return jnp.sum(out * jnp.arange(out.size).reshape(out.shape) / out.size)
            return jax.grad(loss)([v.value for v in layer.trainable_variables])
        np.testing.assert_allclose(ours(x), ref(x), atol=1e-6)
        for a, b in zip(grads(ours), grads(ref), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
        model = keras.Sequential([keras.Input((9, 3)), GateLSTM(4), keras.layers.Dense(1)])
        model.compile("adam", "mse")
        model.fit(x, x[:, -1, :1], epochs=1, verbose=0)
        print("matches")
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "matches" in done.stdout
