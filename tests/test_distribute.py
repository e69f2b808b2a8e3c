"""mirrorgan_tf.distribute: per-sample random draws follow the global batch under a strategy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from mirrorgan_tf.distribute import global_dropout, global_normal, replica_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two logical CPUs must be set up before TensorFlow starts: a fresh process. Each replica
# draws for its half of a batch of 4; the halves, put together, must be the one-device draw,
# and differ from each other.
_TWO_REPLICAS = """
import json
import keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from mirrorgan_tf.distribute import global_dropout, global_normal

def single():
    noise = global_normal(4, (3,), keras.random.SeedGenerator(7))
    mask = global_dropout(tf.ones([4, 5]), 0.5, keras.random.SeedGenerator(8), training=True)
    return noise.numpy(), mask.numpy()

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    seeds = keras.random.SeedGenerator(7), keras.random.SeedGenerator(8)

@tf.function
def step():
    def replica():
        return (global_normal(2, (3,), seeds[0]),
                global_dropout(tf.ones([2, 5]), 0.5, seeds[1], training=True))
    return strategy.run(replica)

noise, mask = step()
together = [np.concatenate([t.numpy() for t in strategy.experimental_local_results(x)])
            for x in (noise, mask)]
print(json.dumps({"single": [a.tolist() for a in single()],
                  "mirrored": [a.tolist() for a in together]}))
"""


def test_one_replica_draws_what_keras_draws():
    noise = global_normal(4, (3,), keras.random.SeedGenerator(1))
    expected = keras.random.normal([4, 3], seed=keras.random.SeedGenerator(1))
    np.testing.assert_array_equal(noise, expected)
    x = tf.random.normal([4, 6])
    dropped = global_dropout(x, 0.5, keras.random.SeedGenerator(2), training=True)
    expected = keras.random.dropout(x, 0.5, seed=keras.random.SeedGenerator(2))
    np.testing.assert_array_equal(dropped, expected)
    assert global_dropout(x, 0.5, keras.random.SeedGenerator(2), training=False) is x
    assert [int(v) for v in replica_rows(4)] == [0, 4]


def test_two_replicas_draw_the_global_batch_and_keep_their_rows():
    result = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICAS], cwd=REPO, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    drawn = json.loads(result.stdout.strip().splitlines()[-1])
    single_noise, single_mask = (np.array(a) for a in drawn["single"])
    noise, mask = (np.array(a) for a in drawn["mirrored"])
    np.testing.assert_allclose(noise, single_noise, rtol=1e-6)
    np.testing.assert_allclose(mask, single_mask, rtol=1e-6)
    # The replicas' rows differ (drawing [2, ...] per replica would repeat them).
    assert not np.allclose(noise[:2], noise[2:])
    assert set(np.unique(mask)) <= {0.0, 2.0}
