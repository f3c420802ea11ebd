"""How many row blocks ``GateLSTM(batch_shards=None)`` cuts a training batch into, without
Keras: a stage's driver settles the LSTM's ``batch_shards`` (``LSTMForecaster.settle``)
without starting TensorFlow where the process can see no GPU."""

from __future__ import annotations

import os

# With batch_shards=None, blocks of fewer rows than this are not worth a thread.
MIN_AUTO_SHARD_ROWS = 16
MAX_AUTO_SHARDS = 8


def default_batch_shards() -> int:
    """Row blocks per batch that ``GateLSTM(batch_shards=None)`` aims for.

    One per CPU core this process may use, at most ``MAX_AUTO_SHARDS``; 1 when
    TensorFlow sees a GPU, where one loop over the whole batch is faster. A process
    whose GPUs are hidden from CUDA (``CUDA_VISIBLE_DEVICES`` empty: ``device: cpu``,
    or ``auto`` on a machine without an NVIDIA device) sees none, so TensorFlow is not
    started to ask.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES") != "":
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_AUTO_SHARDS, cores or 1))
