"""Tests for mirrorgan_tf/export/client.py against responses made by the exported model.

A local HTTP server answers `/v1/models/NAME:predict` the way TF Serving's REST API does
(row format in, row format out) by running the loaded SavedModel.
"""

import http.server
import json
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mirrorgan_tf.export.client import (
    decode_predict_response,
    predict,
    predict_request,
    save_pngs,
)
from mirrorgan_tf.export.saved_model import export_saved_model
from tests.export.test_saved_model import tiny_model


def rest_predict(loaded, body: dict) -> dict:
    """What TF Serving's REST API does with a `:predict` body, by its documented rules.

    Row format (`instances`): a list of objects keyed by input name, or of bare values when
    the signature has a single input; the rows are stacked, the signature runs, and the
    answer is `predictions`, one row each. Columnar (`inputs`): an object keyed by input name,
    or a bare value for a single input; the answer is `outputs`.
    """
    signature = loaded.signatures[body.get("signature_name", "serving_default")]
    specs = signature.structured_input_signature[1]
    names = sorted(specs)

    def tensors(columns: dict) -> dict:
        if sorted(columns) != names:
            raise ValueError(f"inputs {sorted(columns)} do not match the signature's {names}")
        return {k: tf.constant(v, specs[k].dtype) for k, v in columns.items()}

    if "instances" in body:
        rows = body["instances"]
        if all(isinstance(row, dict) for row in rows):
            columns = {k: [row[k] for row in rows] for k in {k for row in rows for k in row}}
        elif len(names) == 1:
            columns = {names[0]: rows}
        else:
            raise ValueError("bare instances need a signature with a single input")
        outputs = {k: v.numpy() for k, v in signature(**tensors(columns)).items()}
        return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()}
                                for i in range(len(rows))]}
    inputs = body["inputs"]
    columns = inputs if isinstance(inputs, dict) else {names[0]: inputs}
    outputs = signature(**tensors(columns))
    return {"outputs": {k: v.numpy().tolist() for k, v in outputs.items()}}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tf.keras.utils.set_random_seed(3)
    model = tiny_model(with_captioner=False)
    path = export_saved_model(model, tmp_path_factory.mktemp("serving"), name="mirrorgan")
    return model, tf.saved_model.load(path)


def test_predict_request_body():
    # No seed: captions alone, to serving_default (fresh noise).
    assert predict_request(["a red bird", "a blue bird"]) == {
        "signature_name": "serving_default",
        "instances": [{"captions": "a red bird"}, {"captions": "a blue bird"}],
    }
    # A seed: the generate signature, one seed per caption.
    assert predict_request(["a red bird", "a blue bird"], seed=4) == {
        "signature_name": "generate",
        "instances": [
            {"captions": "a red bird", "seed": 4},
            {"captions": "a blue bird", "seed": 4},
        ],
    }
    assert predict_request(["a", "b"], seed=[1, 2])["instances"][1]["seed"] == 2
    assert predict_request("a", seed=1, signature="other")["signature_name"] == "other"
    assert json.loads(json.dumps(predict_request(b"\xff bad", seed=0)))["instances"][0][
        "captions"
    ] == "\ufffd bad"
    with pytest.raises(ValueError, match="2 seeds for 3"):
        predict_request(["a", "b", "c"], seed=[1, 2])
    with pytest.raises(ValueError, match="int32"):
        predict_request("a", seed=2**31)


def test_every_rest_form_of_a_captions_only_request(served):
    """`{"instances": ["..."]}`, `[{"captions": ...}]` and columnar `inputs` all draw images."""
    _, loaded = served
    captions = ["a red circle", "a blue square"]
    bodies = [
        {"instances": captions},
        {"instances": [{"captions": c} for c in captions]},
        {"signature_name": "serving_default", "inputs": {"captions": captions}},
        {"inputs": captions},
        predict_request(captions),
    ]
    for body in bodies:
        images = decode_predict_response(json.dumps(rest_predict(loaded, body)))
        assert len(images) == 2 and images[0].shape == (128, 128, 3), body
        assert images[0].dtype == np.uint8
    # Fresh noise each call: the same caption twice gives two images.
    twice = decode_predict_response(rest_predict(loaded, {"instances": captions[:1] * 2}))
    assert not np.array_equal(twice[0], twice[1])
    # A seed is not an input of serving_default: the REST layer refuses it.
    with pytest.raises(ValueError, match="do not match"):
        rest_predict(loaded, {"instances": [{"captions": "a", "seed": 0}]})


def test_seeded_rest_forms_reproduce_generate(served):
    model, loaded = served
    want = model.generate(["a red circle", "a blue square"], seed=5)
    bodies = [
        predict_request(["a red circle", "a blue square"], seed=5),
        {"signature_name": "generate",
         "inputs": {"captions": ["a red circle", "a blue square"], "seed": [5, 5]}},
    ]
    for body in bodies:
        images = decode_predict_response(json.dumps(rest_predict(loaded, body)))
        for got, expected in zip(images, want, strict=True):
            assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_decode_response_from_the_exported_model(served, tmp_path):
    model, loaded = served
    captions = ["a small red circle", "", "!!!"]
    body = predict_request(captions, seed=[1, 2, 3])
    response = json.dumps(rest_predict(loaded, json.loads(json.dumps(body))))
    images = decode_predict_response(response)
    assert len(images) == 3 and images[0].dtype == np.uint8 and images[0].shape == (128, 128, 3)
    for caption, seed, image in zip(captions, [1, 2, 3], images, strict=True):
        want = model.generate(caption, seed=seed)[0]
        assert np.abs(image.astype(int) - want.astype(int)).max() <= 1
    lower = decode_predict_response(response, output="images_64")
    assert lower[0].shape == (64, 64, 3)
    paths = save_pngs(images, tmp_path / "pngs")
    assert len(paths) == 3
    np.testing.assert_array_equal(np.asarray(Image.open(paths[1])), images[1])


def test_decode_columnar_and_errors():
    columnar = {"outputs": {"images": [[[[1, 2, 3]]], [[[4, 5, 6]]]]}}
    images = decode_predict_response(columnar)
    assert [i.tolist() for i in images] == [[[[1, 2, 3]]], [[[4, 5, 6]]]]
    assert decode_predict_response({"predictions": [[[[7, 8, 9]]]]})[0].tolist() == [[[7, 8, 9]]]
    with pytest.raises(ValueError, match="error"):
        decode_predict_response('{"error": "Signature input alias: seed not found"}')
    with pytest.raises(ValueError, match="Not a predict response"):
        decode_predict_response({"foo": 1})


def test_predict_against_a_rest_stand_in(served):
    model, loaded = served
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/models/mirrorgan:predict":
                self.send_response(404)
                payload = json.dumps({"error": "Servable not found"}).encode()
            else:
                with lock:
                    payload = json.dumps(rest_predict(loaded, body)).encode()
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        images = predict(url, ["a red circle", "a blue square"], seed=9)
        assert len(images) == 2 and images[0].shape == (128, 128, 3)
        want = model.generate("a blue square", seed=9)[0]
        assert np.abs(images[1].astype(int) - want.astype(int)).max() <= 1
        fresh = predict(url, ["a red circle"] * 2)
        assert len(fresh) == 2 and not np.array_equal(fresh[0], fresh[1])
        with pytest.raises(ValueError, match="404"):
            predict(url, "a red circle", model="other")
    finally:
        server.shutdown()
        server.server_close()


def test_client_does_not_need_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys; import mirrorgan_tf.export.client as c; "
        "c.predict_request('a', seed=1); c.decode_predict_response({'predictions': [[[[0]]]]}); "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; print('OK')"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "OK" in run.stdout, run.stderr[-2000:]
