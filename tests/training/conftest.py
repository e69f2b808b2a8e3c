"""Tiny configurations shared by the training tests."""

import keras
import pytest

# A shapes preset shrunk so that a training step takes well under a second on 2 CPU cores.
TINY = dict(
    gf_dim=4,
    df_dim=4,
    nef=16,
    embedding_dim=16,
    z_dim=8,
    condition_dim=8,
    captioner_embed_dim=16,
    captioner_hidden_dim=16,
    num_stages=2,
    words_num=8,
)


@pytest.fixture
def tiny_overrides():
    return dict(TINY)


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")
