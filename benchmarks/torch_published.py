"""The published PyTorch modules at a preset's sizes, for side-by-side timings (`--against-torch`).

The modules are the PyTorch restatement of the published code that the conversion tests check
our networks against (`tests/convert/torch_reference.py`), at the configuration's sizes; their
weights are PyTorch's default initialisation (timings do not depend on the values). Needs
PyTorch (`make setup` installs it).
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _check_published(config: dict, parts: tuple[str, ...]) -> None:
    """The configuration must be one the published code has (birds, coco), not a deviation."""
    deviations = [key for key in ("residual_images", "normalize_sentence") if config.get(key)]
    if "captioner" in parts and config.get("captioner_backbone") != "resnet152":
        deviations.append(f"captioner_backbone={config.get('captioner_backbone')}")
    if deviations:
        raise SystemExit(
            "--against-torch times the published code, which has no " + ", ".join(deviations)
            + ": use a published preset (--preset birds or coco)"
        )


def _text_encoder_and_generator(config: dict, parts: tuple[str, ...]):
    """`(torch, the reference module, RNN_ENCODER, G_NET)`, seeded, threads as TF's."""
    _check_published(config, parts)
    import torch

    from tests.convert import torch_reference as ref

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    text_encoder = ref.RNN_ENCODER(config["vocab_size"], config["embedding_dim"], config["nef"])
    generator = ref.G_NET(config["gf_dim"], config["nef"], config["condition_dim"],
                          config["z_dim"], config["r_num"], branch_num=config["num_stages"])
    return torch, ref, text_encoder, generator


def build(config: dict):
    """`(PublishedIteration, torch module)` at the configuration's sizes, threads as TF's."""
    from mirrorgan_tf import presets

    torch, ref, text_encoder, generator = _text_encoder_and_generator(config, ("captioner",))
    nef, vocab = config["nef"], config["vocab_size"]
    discriminators = [ref.D_NET(s, config["df_dim"], nef) for s in presets.image_sizes(config)]
    encoder = ref.EncoderCNN(config["captioner_embed_dim"])
    decoder = ref.DecoderRNN(config["captioner_embed_dim"], config["captioner_hidden_dim"], vocab)
    iteration = ref.PublishedIteration(
        text_encoder, generator, discriminators, encoder, decoder, config["z_dim"],
        config["training"]["caption_loss_weight"],
    )
    return iteration, torch


def build_generation(config: dict):
    """`(generate(token_ids, noise) -> uint8 NHWC numpy, torch)`: STEM + G_NET, eval mode.

    The published test-time path: the caption's word and sentence features from the text
    encoder, conditioning augmentation's mu (no noise), the last stage's image, to uint8.
    """
    torch, _, text_encoder, generator = _text_encoder_and_generator(config, ())
    text_encoder, generator = text_encoder.eval(), generator.eval()

    def generate(token_ids: np.ndarray, noise: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            captions = torch.from_numpy(np.asarray(token_ids).astype(np.int64))
            lengths = (captions != 0).sum(1).clamp(min=1)
            words, sentence = text_encoder(captions, lengths)
            images = generator(torch.from_numpy(np.asarray(noise)), sentence, words,
                               captions == 0)[0][-1]
            pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            return pixels.permute(0, 2, 3, 1).numpy()

    return generate, torch


def batch_to_torch(data: dict, torch) -> tuple:
    """A `synthetic_batch` (NHWC tensors) as the published code's inputs (NCHW, int64)."""
    images = [torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()) for x in data["images"]]
    captions = torch.from_numpy(np.asarray(data["token_ids"]).astype(np.int64))
    lengths = torch.from_numpy(np.asarray(data["caption_length"]).astype(np.int64))
    return images, captions, lengths
