"""The command line: `info` output, errors without tracebacks, `python -m`."""

import json
import subprocess
import sys

from mirrorgan_tf import cli
from tests.test_presets import PUBLISHED


def test_info_json_reports_every_component(capsys):
    assert cli.main(["info", "--preset", "birds", "--vocab-size", "5450", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    want = {k: v for k, v in PUBLISHED["birds"].items() if k != "vocab_size"}
    assert report["parameters"] == want
    assert report["config"]["gf_dim"] == 32


def test_info_table(capsys):
    assert cli.main(["info", "--preset", "shapes"]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters:" in out and "generator" in out and "total" in out


def test_bad_input_is_one_line_without_traceback(capsys):
    assert cli.main(["info", "--preset", "flowers"]) == 2
    err = capsys.readouterr().err
    assert "Unknown preset 'flowers'" in err and "Traceback" not in err
    assert cli.main(["info", "--preset", "birds", "--vocab-size", "1"]) == 2


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "mirrorgan_tf", "--help"], capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0
    for command in ("info", "pretrain-stem", "pretrain-stream", "train", "generate", "demo",
                    "export", "evaluate", "convert", "prepare-data"):
        assert command in result.stdout


def test_generate_writes_a_grid_from_a_preset_folder(tmp_path, capsys):
    from PIL import Image

    from mirrorgan_tf import presets
    from mirrorgan_tf.data.shapes import shapes_vocabulary

    config = presets.get_config(
        "shapes", gf_dim=4, nef=16, embedding_dim=16, z_dim=8, condition_dim=8, num_stages=2
    )
    vocab = tmp_path / "vocabulary.txt"
    shapes_vocabulary().save(vocab)
    folder = presets.save_to_preset(
        str(tmp_path / "model"), config,
        {n: presets.build_component(n, config) for n in ("text_encoder", "generator")},
        vocabulary_path=str(vocab),
    )
    out = tmp_path / "grid.png"
    code = cli.main(["generate", "--model", folder, "a red circle", "a blue star on the left",
                     "--out", str(out), "--seed", "3"])
    assert code == 0 and "Wrote" in capsys.readouterr().out
    width, height = Image.open(out).size
    assert width > height > 100  # two rows: stages and attention maps side by side
    assert cli.main(["generate", "--model", str(tmp_path / "nothing"), "x"]) == 2
