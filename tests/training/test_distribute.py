"""tf.distribute: two steps on two replicas equal two single-device steps on the same batches.

Logical devices and multi-worker strategies must be set up before TensorFlow starts, so every
run happens in a fresh subprocess (`_WORKER`). The tests compare what the runs saved in their
step-2 checkpoint: the optimizers' variables (Adam's moments are linear in the gradients of
both steps: a replica-summed gradient off by a factor 2 would show as 100% here, while the
weights would not show it, Adam's step being scale-invariant) and the trainer's weights (all
networks). Measured on 2 CPU cores with dropout and noise on, STREAM / DAMSM / MirrorGAN:
optimizer variables agree to 2.9e-4 / 2.2e-2 / 1.9e-2 (relative to each array's largest
value, floor 1e-6), weights to 1.6e-6 / 1.9e-3 / 3.3e-4 absolute, BatchNorm moving
variances to 0.2 / 0.2 / 0.5 %. The large DAMSM differences are in the image
encoder's trunk and in at most 0.5 % of an array's elements (the text encoder agrees to
2e-7): Adam turns gradients near its epsilon into steps whose size roundoff decides
(synchronised BatchNorm sums in another order), and those weights feed step 2's gradients.
A wrong gradient scale, noise or dropout mask moves most elements, not a few: the tests
bound the fraction of elements beyond the tolerances (1 %) and how far any goes (10x).
The moving variances differ because Keras updates them with the unbiased (N / (N - 1)) batch
variance on one device and the biased one under `synchronized=True` (N = batch x height x
width, 64 for the 4x4 maps here; the normalisation itself uses the biased variance both ways).

Per-sample random draws (z, conditioning-augmentation noise, text-encoder dropout masks) are
made for the global batch by every replica, which keeps its rows (`mirrorgan_tf.distribute`),
so the runs compare with dropout and noise on.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECKPOINT = os.path.join("checkpoints", "step-00000002")
# Bounds a little above the measured differences (module docstring), which at most
# OUTLIER_FRACTION of an array's elements may exceed, by at most OUTLIER_BOUND times.
OPTIMIZER_TOLERANCE = 3e-2
WEIGHT_TOLERANCE = 3e-4
MOVING_VARIANCE_TOLERANCE = 2e-2
OUTLIER_FRACTION = 0.01
OUTLIER_BOUND = 10.0

# argv: logical CPU devices, a JSON list of [run function, out folder, strategy, kwargs].
_WORKER = """
import json, sys
import tensorflow as tf
devices, jobs = int(sys.argv[1]), json.loads(sys.argv[2])
if devices > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
from mirrorgan_tf.training import run
from tests.training.conftest import TINY
for kind, out, strategy, kwargs in jobs:
    kwargs = {"steps": 2, "checkpoint_every": 2, **kwargs}
    getattr(run, kind)("shapes", "shapes", out, batch_size=4, verbose=0, strategy=strategy,
                       **TINY, **kwargs)
"""


def _command(jobs: list, devices: int = 1) -> list:
    return [sys.executable, "-c", _WORKER, str(devices), json.dumps(jobs)]


def _env(tf_config: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _run(jobs: list, devices: int = 1) -> None:
    result = subprocess.run(_command(jobs, devices), cwd=REPO, env=_env(), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]


def _h5_arrays(path: str) -> dict[str, np.ndarray]:
    arrays = {}

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            arrays[name] = item[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return arrays


def _saved_state(out: str) -> dict[str, np.ndarray]:
    """Trainer weights and optimizer variables of the step-2 checkpoint, by name."""
    folder = os.path.join(out, CHECKPOINT)
    weights = _h5_arrays(os.path.join(folder, "trainer.weights.h5"))
    # trainer.weights.h5 holds the optimizers' variables too; the .npz files have them.
    state = {f"weights/{k}": v for k, v in weights.items() if "optimizer/" not in k}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".npz"):
            with np.load(os.path.join(folder, name)) as arrays:
                state.update({f"{name}/{k}": arrays[k] for k in arrays.files})
    return state


def _is_moving_variance(key: str) -> bool:
    # Keras BatchNormalization variables: gamma, beta, moving_mean, moving_variance.
    return re.search(r"(batch_normalization[^/]*|bn\d*)/vars/3$", key) is not None


def _compare(single_out: str, distributed_out: str) -> dict[str, float]:
    """Largest difference of each kind, and the largest fraction of outliers, after asserting
    that in every array at most `OUTLIER_FRACTION` of the elements exceed their kind's
    tolerance and none exceeds `OUTLIER_BOUND` times it (module docstring)."""
    single, distributed = _saved_state(single_out), _saved_state(distributed_out)
    assert single.keys() == distributed.keys()
    assert any(k.endswith(".npz/v00002") for k in single), "no optimizer state was saved"
    worst = {"optimizer": 0.0, "weights": 0.0, "moving_variance": 0.0, "outliers": 0.0}
    for key in single:
        x = np.asarray(single[key], np.float64)
        y = np.asarray(distributed[key], np.float64)
        assert x.shape == y.shape, key
        difference = np.abs(x - y)
        if not key.startswith("weights/"):
            kind, tolerance = "optimizer", OPTIMIZER_TOLERANCE
            difference /= max(float(np.max(np.abs(x), initial=0.0)), 1e-6)
        elif _is_moving_variance(key):
            kind, tolerance = "moving_variance", MOVING_VARIANCE_TOLERANCE
            difference /= max(float(np.max(np.abs(x), initial=0.0)), 1e-6)
        else:
            kind, tolerance = "weights", WEIGHT_TOLERANCE
        largest = float(np.max(difference, initial=0.0))
        outliers = float(np.mean(difference > tolerance)) if difference.size else 0.0
        assert outliers <= OUTLIER_FRACTION, (key, outliers, largest)
        assert largest <= OUTLIER_BOUND * tolerance, (key, largest)
        worst[kind] = max(worst[kind], largest)
        worst["outliers"] = max(worst["outliers"], outliers)
    return worst


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    """Single-device runs: STEM, STREAM, MirrorGAN on those two."""
    root = tmp_path_factory.mktemp("single")
    paths = {k: str(root / k) for k in ("stem", "stream", "gan")}
    _run([["pretrain_stem", paths["stem"], None, {}],
          ["pretrain_stream", paths["stream"], None, {}],
          ["train", paths["gan"], None, {"stem": paths["stem"], "stream": paths["stream"]}]])
    return paths


def test_mirrored_stream_pretraining_matches_single_device(tmp_path):
    single, mirrored = str(tmp_path / "single"), str(tmp_path / "mirrored")
    _run([["pretrain_stream", single, None, {}]])
    # One DAMSM step first, in the same process: a second run under a new MirroredStrategy
    # used to fail with "Shape mismatch in the collective instance 100" (see run._strategy).
    _run([["pretrain_stem", str(tmp_path / "stem"), "mirrored",
           {"steps": 1, "checkpoint_every": 1}],
          ["pretrain_stream", mirrored, "mirrored", {}]], devices=2)
    print(_compare(single, mirrored))  # the measured differences, for -s


@pytest.mark.slow
def test_mirrored_damsm_pretraining_and_mirrorgan_training_match_single_device(
    single_device, tmp_path
):
    stem, gan = str(tmp_path / "stem"), str(tmp_path / "gan")
    _run([["pretrain_stem", stem, "mirrored", {}],
          ["train", gan, "mirrored",
           {"stem": single_device["stem"], "stream": single_device["stream"]}]], devices=2)
    print(_compare(single_device["stem"], stem), _compare(single_device["gan"], gan))


@pytest.mark.slow
def test_mirrored_damsm_pretraining_with_the_keyword_code_matches_single_device(tmp_path):
    # The keyword term is computed on the all-gathered batch, like the DAMSM terms: token ids
    # left per replica would not match the gathered sentences, a term counted per replica
    # would double its share of the gradient.
    keywords = {"training": {"damsm_keywords": "shapes"}}
    single, mirrored = str(tmp_path / "single"), str(tmp_path / "mirrored")
    _run([["pretrain_stem", single, None, keywords]])
    _run([["pretrain_stem", mirrored, "mirrored", keywords]], devices=2)
    print(_compare(single, mirrored))


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_multi_worker_stream_pretraining_matches_single_process(single_device, tmp_path):
    out = str(tmp_path / "stream")
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            _command([["pretrain_stream", out, "multi_worker", {}]]), cwd=REPO,
            env=_env(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    try:
        results = [p.communicate(timeout=900) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, (_, stderr) in zip(processes, results, strict=True):
        assert p.returncode == 0, stderr[-4000:]
    # Only the chief (worker 0) wrote the run folder; the other's temporary folder is gone.
    assert os.path.exists(os.path.join(out, "model", "captioner.weights.h5"))
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["latest", "step-00000002"]
    # Each worker trained on its half of every global batch of 4: together the global batch.
    print(_compare(single_device["stream"], out))
