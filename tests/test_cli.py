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
    for command in ("info", "pretrain-stem", "pretrain-stream", "train", "generate", "demo"):
        assert command in result.stdout
