"""A small TF Serving REST client for the exported SavedModel (numpy, Pillow, no TensorFlow).

Without a seed the request goes to `serving_default` (captions alone, fresh noise); with one
it goes to the `generate` signature (captions and seeds, reproducible images).

Example:
>>> predict_request(["a small red bird"])["instances"]
[{'captions': 'a small red bird'}]
>>> body = predict_request(["a small red bird"], seed=0)
>>> body["signature_name"], body["instances"]
('generate', [{'captions': 'a small red bird', 'seed': 0}])
>>> images = predict("http://localhost:8501", ["a small red bird"], seed=0)  # doctest: +SKIP
>>> save_pngs(images, "out")  # doctest: +SKIP
['out/image_0.png']
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SIGNATURE = "serving_default"  # captions alone
SEEDED_SIGNATURE = "generate"  # captions and seeds


def _seeds(seed: int | Sequence[int], count: int) -> list[int]:
    if isinstance(seed, int | np.integer):
        return [int(seed)] * count
    seeds = [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"Got {len(seeds)} seeds for {count} captions.")
    return seeds


def predict_request(
    captions: str | Sequence[str],
    seed: int | Sequence[int] | None = None,
    signature: str | None = None,
) -> dict[str, Any]:
    """The JSON body of a TF Serving REST `:predict` call (row format, one instance a caption).

    Args:
        captions: a caption or a list of captions.
        seed: None (fresh noise for every caption, the `serving_default` signature), an int
            (every caption gets this seed: a caption and a seed always give the same image),
            or one int per caption; seeds go to the `generate` signature. Seeds are int32; a
            negative seed means fresh noise.
        signature: the signature name; default `serving_default` without a seed, `generate`
            with one.

    Returns:
        `{"signature_name": ..., "instances": [{"captions": ...[, "seed": ...]}, ...]}`.

    Example:
    >>> predict_request("a red bird")
    {'signature_name': 'serving_default', 'instances': [{'captions': 'a red bird'}]}
    >>> predict_request(["a", "b"], seed=[3, 4])["instances"][1]
    {'captions': 'b', 'seed': 4}
    """
    if isinstance(captions, str | bytes):
        captions = [captions]
    captions = [c.decode("utf-8", errors="replace") if isinstance(c, bytes) else str(c)
                for c in captions]
    if seed is None:
        return {
            "signature_name": signature or SIGNATURE,
            "instances": [{"captions": caption} for caption in captions],
        }
    seeds = _seeds(seed, len(captions))
    for s in seeds:
        if not -(2**31) <= s < 2**31:
            raise ValueError(f"Seeds are int32; got {s}.")
    return {
        "signature_name": signature or SEEDED_SIGNATURE,
        "instances": [
            {"captions": caption, "seed": s} for caption, s in zip(captions, seeds, strict=True)
        ],
    }


def decode_predict_response(
    json_body: str | bytes | Mapping[str, Any], output: str = "images"
) -> list[np.ndarray]:
    """The uint8 images [S, S, 3] of a TF Serving `:predict` response, one per caption.

    Reads the row format (`{"predictions": [{"images": ...}, ...]}`, or bare arrays when the
    signature has a single output) and the columnar format (`{"outputs": {"images": ...}}`).

    Args:
        json_body: the response body (text, bytes or parsed JSON).
        output: which output to read (`images`, or a lower stage such as `images_64`).

    Raises:
        ValueError: for an error response or one without the output.

    Example:
    >>> decode_predict_response({"predictions": [{"images": [[[0, 128, 255]]]}]})[0].shape
    (1, 1, 3)
    """
    body = json.loads(json_body) if isinstance(json_body, str | bytes) else json_body
    if "error" in body:
        raise ValueError(f"TF Serving returned an error: {body['error']}")
    if "predictions" in body:
        rows = body["predictions"]
        values = [row[output] if isinstance(row, Mapping) else row for row in rows]
    elif "outputs" in body:
        outputs = body["outputs"]
        values = outputs[output] if isinstance(outputs, Mapping) else outputs
    else:
        raise ValueError(f"Not a predict response: keys {sorted(body)}.")
    return [np.clip(np.asarray(v), 0, 255).astype(np.uint8) for v in values]


def save_pngs(
    images: Sequence[np.ndarray], out_dir: str | os.PathLike, prefix: str = "image"
) -> list[str]:
    """Writes each uint8 [S, S, 3] image as `out_dir/<prefix>_<i>.png`.

    Args:
        images: uint8 images.
        out_dir: the folder (created when missing).
        prefix: the file name prefix.

    Returns:
        The paths written.

    Example:
    >>> save_pngs([np.zeros([4, 4, 3], np.uint8)], "/tmp/pngs")  # doctest: +SKIP
    ['/tmp/pngs/image_0.png']
    """
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = os.path.join(os.fspath(out_dir), f"{prefix}_{i}.png")
        Image.fromarray(np.asarray(image, np.uint8)).save(path)
        paths.append(path)
    return paths


def predict(
    server: str,
    captions: str | Sequence[str],
    seed: int | Sequence[int] | None = None,
    model: str = "mirrorgan",
    output: str = "images",
    timeout: float = 120.0,
) -> list[np.ndarray]:
    """POSTs captions to `SERVER/v1/models/MODEL:predict` and returns the uint8 images.

    Args:
        server: e.g. `http://localhost:8501`.
        captions: a caption or a list of captions.
        seed: as in `predict_request` (None: fresh noise, through `serving_default`).
        model: the model name in the server's config.
        output: `images` (last stage) or a lower stage (`images_64`, `images_128`).
        timeout: seconds.

    Example:
    >>> images = predict("http://localhost:8501", "a red bird", seed=3)  # doctest: +SKIP
    """
    url = f"{server.rstrip('/')}/v1/models/{model}:predict"
    data = json.dumps(predict_request(captions, seed)).encode("utf-8")
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            message = json.loads(body).get("error", body)
        except ValueError:
            message = body
        raise ValueError(f"{url} answered {error.code}: {message}") from None
    return decode_predict_response(body, output=output)
