"""Tests for mirrorgan_tf/evaluation/fid_inception.py: pytorch-fid's numbers, from Keras.

pytorch-fid (a test dependency) is run on the same PNG files with the same random weights:
its `fid_inception_v3()` downloads the published weights, so the tests hand it a random
state_dict instead, with BatchNorm statistics calibrated on random images so that the
activations keep a realistic scale through the 94 layers.
"""

import os

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # about 2 minutes: Inception-v3 at 299 px in both frameworks

torch = pytest.importorskip("torch")
pfid_inception = pytest.importorskip("pytorch_fid.inception")
from pytorch_fid import fid_score  # noqa: E402
from torchvision.models import inception_v3  # noqa: E402

from mirrorgan_tf.evaluation.evaluate import load_inception  # noqa: E402
from mirrorgan_tf.evaluation.fid_inception import (  # noqa: E402
    FIDInception,
    build_fid_inception_network,
    load_pytorch_fid_state,
)
from mirrorgan_tf.evaluation.inception import (  # noqa: E402
    StreamingStatistics,
    frechet_distance,
    load_statistics,
    save_statistics,
)


def _smooth_images(rng, count, size):
    """Images with structure at several scales (noise blurred by up-sampling), uint8."""
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(rng.integers(3, 9),) * 2 + (3,), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
        noise = rng.integers(-20, 21, size=(size, size, 3))
        images.append(np.clip(np.asarray(image, np.int64) + noise, 0, 255).astype(np.uint8))
    return np.stack(images)


def _write_pngs(folder, images):
    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(os.path.join(folder, f"{i:03d}.png"))
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


@pytest.fixture(scope="module")
def fid_setup(tmp_path_factory):
    """(pytorch-fid's InceptionV3 with random weights, the same weights as a .pth file)."""
    torch.manual_seed(0)
    random_state = inception_v3(
        num_classes=1008, aux_logits=False, weights=None, init_weights=True
    ).state_dict()
    patch = pytest.MonkeyPatch()
    patch.setattr(pfid_inception, "load_state_dict_from_url", lambda *a, **k: random_state)
    network = pfid_inception.fid_inception_v3()  # the FID blocks, the random weights
    patch.setattr(pfid_inception, "fid_inception_v3", lambda: network)
    model = pfid_inception.InceptionV3([3])
    # Calibrate the BatchNorm statistics (cumulative averages over random images).
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    calibration = _smooth_images(np.random.default_rng(1), 16, 128)
    with torch.no_grad():
        model(torch.from_numpy(calibration).permute(0, 3, 1, 2).float() / 255)
    model.eval()
    path = str(tmp_path_factory.mktemp("fid") / "pt_inception_random.pth")
    torch.save(network.state_dict(), path)
    yield model, path
    patch.undo()


@pytest.fixture(scope="module")
def ours(fid_setup):
    return FIDInception.from_weights(fid_setup[1])


@pytest.mark.parametrize("size", [64, 256])
def test_pool_features_equal_pytorch_fid(fid_setup, ours, tmp_path, size):
    model, _ = fid_setup
    images = _smooth_images(np.random.default_rng(size), 6, size)
    files = _write_pngs(str(tmp_path / "images"), images)
    theirs = fid_score.get_activations(files, model, batch_size=3, dims=2048, device="cpu",
                                       num_workers=0)
    _, features = ours(images)
    assert features.shape == theirs.shape == (6, 2048)
    assert theirs.std() > 0.05  # a realistic scale: the check below is not trivially met
    np.testing.assert_allclose(features, theirs, atol=1e-4, rtol=1e-4)


def test_fid_and_statistics_files_equal_pytorch_fid(fid_setup, ours, tmp_path):
    model, _ = fid_setup
    rng = np.random.default_rng(5)
    first = _write_pngs(str(tmp_path / "a"), _smooth_images(rng, 12, 64))
    _write_pngs(str(tmp_path / "b"), _smooth_images(rng, 12, 256))
    theirs = fid_score.calculate_fid_given_paths(
        [str(tmp_path / "a"), str(tmp_path / "b")], batch_size=4, device="cpu", dims=2048,
        num_workers=0,
    )
    statistics = []
    for folder in ("a", "b"):
        files = sorted((tmp_path / folder).glob("*.png"))
        images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
        stream = StreamingStatistics(2048)
        stream.update(ours(images)[1])
        statistics.append((stream.mean, stream.covariance))
    value = frechet_distance(*statistics[0], *statistics[1])
    assert theirs > 1.0
    assert value == pytest.approx(theirs, rel=1e-3)

    # pytorch-fid's statistics file loads unchanged; ours is read by pytorch-fid's script.
    fid_score.save_fid_stats([str(tmp_path / "a"), str(tmp_path / "theirs.npz")], 4, "cpu",
                             2048, num_workers=0)
    mu, sigma = load_statistics(str(tmp_path / "theirs.npz"))
    np.testing.assert_allclose(mu, statistics[0][0], atol=1e-4)
    np.testing.assert_allclose(sigma, statistics[0][1], atol=1e-4)
    save_statistics(str(tmp_path / "ours.npz"), *statistics[1], features=np.zeros([2, 2048]))
    again = fid_score.calculate_fid_given_paths(
        [str(tmp_path / "a"), str(tmp_path / "ours.npz")], batch_size=4, device="cpu",
        dims=2048, num_workers=0,
    )
    assert again == pytest.approx(theirs, rel=1e-3)
    del first


def test_softmax_is_the_fc_layer_of_the_weights(fid_setup, ours):
    model, path = fid_setup
    images = _smooth_images(np.random.default_rng(7), 2, 64)
    probabilities, features = ours(images)
    state = torch.load(path, weights_only=True)
    logits = features @ state["fc.weight"].double().numpy().T + state["fc.bias"].double().numpy()
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert probabilities.shape == (2, 1008)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_weights_h5_round_trip_needs_no_torch(ours, tmp_path, monkeypatch):
    path = ours.save_weights(str(tmp_path / "fid.weights.h5"))
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    again = load_inception(path, "pytorch-fid")
    images = _smooth_images(np.random.default_rng(8), 2, 64)
    np.testing.assert_array_equal(again(images)[1], ours(images)[1])


def test_wrong_files_are_clear_errors(fid_setup, tmp_path):
    _, path = fid_setup
    state = torch.load(path, weights_only=True)
    del state["Mixed_7c.branch_pool.conv.weight"]
    state["extra.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match="missing Mixed_7c.branch_pool.conv.weight.*unexpected"):
        load_pytorch_fid_state(build_fid_inception_network(), {
            k: v.numpy() for k, v in state.items()}, "bad.pth")
    with pytest.raises(FileNotFoundError, match="wget https://github.com/mseitzer"):
        FIDInception.from_weights(str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="pytorch-fid's own Inception weights"):
        load_inception("imagenet", "pytorch-fid")
    with pytest.raises(ValueError, match="unknown FID backend"):
        load_inception(None, "clean-fid")
