"""Pictures: the sample grid keeps its captions inside the picture."""

import numpy as np
from PIL import Image

from mirrorgan_tf.visualize import save_generation_grid

CAPTIONS = [
    "a tiny green star on the left and a large purple diamond at the top right",
    "a small blue square at the bottom right",
]


def _grid(tmp_path, num_stages):
    stages = [np.full([2, 64 * 2**i, 64 * 2**i, 3], 120, np.uint8) for i in range(num_stages)]
    attention = [np.random.default_rng(0).random([2, 16 * 2**i, 16 * 2**i, 5])
                 for i in range(1, num_stages)]
    result = {"images": stages, "attention": attention,
              "words": [c.split()[:5] for c in CAPTIONS]}
    path = save_generation_grid(result, CAPTIONS, str(tmp_path / f"grid{num_stages}.png"))
    return np.asarray(Image.open(path).convert("L"))


def test_captions_stay_inside_a_one_stage_grid(tmp_path):
    # A one-stage run's grid is one image wide; its long captions wrap instead of running
    # off the right edge, which stays white.
    pixels = _grid(tmp_path, 1)
    assert pixels[:, -3:].min() >= 250
    assert (pixels < 128).any()  # the captions and labels are drawn


def test_a_three_stage_grid_draws_every_stage_and_word(tmp_path):
    pixels = _grid(tmp_path, 3)
    # 3 stages and 5 attention maps per row, each 2 inches at 80 dpi.
    assert pixels.shape[1] == 8 * 2 * 80
    assert pixels[:, -3:].min() >= 250


def test_learning_curve_plot(tmp_path):
    from mirrorgan_tf.visualize import save_learning_curve

    rows = [{"images_seen": 8 * k, "colour": k / 10, "shape": 0.2, "size": 0.5,
             "position": 0.3, "train_level": "easy" if k < 3 else "full"} for k in range(1, 6)]
    path = save_learning_curve(rows, str(tmp_path / "curve.png"),
                               chance={"colour": 0.14, "shape": 0.2}, title="demo")
    image = np.asarray(Image.open(path))
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 10  # lines, not a blank canvas
