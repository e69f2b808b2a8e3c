"""The command line: `info` output, errors without tracebacks, `python -m`, quiet and quick."""

import json
import os
import subprocess
import sys

import pytest

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


COMMANDS = ("info", "demo", "pretrain-stem", "pretrain-stream", "train", "generate", "export",
            "prepare-data", "evaluate", "convert")
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "saved_models", "shapes")


def run_cli(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """`python -m mirrorgan_tf ARGS` in a fresh process, without the caller's TF log level."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "mirrorgan_tf", *args], capture_output=True,
                          text=True, env={**environ, **(env or {})}, cwd=cwd, timeout=300)


def test_every_help_answers_without_importing_tensorflow():
    code = (
        "import sys\n"
        "from mirrorgan_tf import cli\n"
        f"for argv in [['--help']] + [[c, '--help'] for c in {COMMANDS!r}]:\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (argv, e.code)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'torch')]\n"
        "assert not bad, bad[:5]\n"
        "print('HELP OK')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "HELP OK" in run.stdout, run.stderr[-3000:]
    assert "--verbose" in run.stdout and "usage: mirrorgan-tf convert" in run.stdout


def test_commands_are_quiet_unless_asked():
    quiet = run_cli("generate", "--model", SHIPPED, "a red circle", "--out", os.devnull)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr == ""  # no oneDNN, CUDA or absl start-up lines
    assert quiet.stdout.startswith("Wrote ")
    # --verbose, or the user's own TF_CPP_MIN_LOG_LEVEL, leaves TensorFlow's logging alone.
    for run in (run_cli("info", "--preset", "shapes", "--verbose"),
                run_cli("info", "--preset", "shapes", env={"TF_CPP_MIN_LOG_LEVEL": "0"})):
        assert run.returncode == 0, run.stderr[-3000:]
        assert "oneDNN" in run.stderr or "absl" in run.stderr, run.stderr[-2000:]


@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "/no/such/folder", "a red circle"], "is not a folder"),
    (["export", "--model", "flowers", "--out", "x"], "not a preset name"),
    (["info", "--preset", "flowers"], "Unknown preset 'flowers'"),
    (["train", "--stem", "/no/stem", "--stream", "/no/stream", "--steps", "1"],
     "'/no/stem' is not a folder"),
    (["evaluate", "--model", "shapes", "--data", "/no/data"], "--data '/no/data'"),
    (["train", "--steps", "many", "--stem", "a", "--stream", "b"], "invalid int value"),
    (["export", "--model", "shapes", "--out", "x", "--quantize", "int3"], "invalid choice"),
])
def test_errors_are_one_line_without_traceback(argv, message, tmp_path):
    run = run_cli(*argv, cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], run.stderr[-2000:]
    # Only argparse's usage line may come with it.
    assert all(line.startswith(("usage:", " ")) or line in errors
               for line in run.stderr.splitlines()), run.stderr[-2000:]


def test_verbose_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="Unknown preset"):
        cli.main(["info", "--preset", "flowers", "--verbose"])
    with pytest.raises(ValueError, match="Unknown preset"):
        cli.main(["--verbose", "info", "--preset", "flowers"])


def test_stderr_set_aside_replays_what_it_held_on_failure(capfd):
    with cli._stderr_set_aside():
        os.write(2, b"start-up noise\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(ImportError), cli._stderr_set_aside():
        os.write(2, b"why the import failed\n")
        raise ImportError("broken")
    assert "why the import failed" in capfd.readouterr().err


def test_set_values_reach_the_training_functions():
    args = cli.build_parser().parse_args([
        "train", "--stem", "a", "--stream", "b", "--set", "num_stages=1",
        "--set", "training.ca_noise=false", "--set", "training.ema_decay=0.999",
    ])
    kwargs = cli._training_kwargs(args)
    assert kwargs["num_stages"] == 1
    assert kwargs["training"] == {"ca_noise": False, "ema_decay": 0.999}
    assert cli.parse_set_values(["rnn_type=gru", "x=[1, 2]"]) == {"rnn_type": "gru", "x": [1, 2]}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        cli.parse_set_values(["=3"])
    args = cli.build_parser().parse_args(["train", "--stem", "a", "--stream", "b",
                                          "--set", "batch_size=4"])
    with pytest.raises(ValueError, match="is an option, --batch-size"):
        cli._training_kwargs(args)


def test_train_passes_init_and_fresh_discriminators_through(monkeypatch):
    from mirrorgan_tf.training import run

    calls = []
    monkeypatch.setattr(run, "train", lambda **kwargs: calls.append(kwargs))
    base = ["train", "--stem", "a", "--stream", "b", "--init", "saved_models/shapes"]
    assert cli.main([*base, "--fresh-discriminators"]) == 0
    assert cli.main(base) == 0
    assert [(c["init"], c["fresh_discriminators"]) for c in calls] == [
        ("saved_models/shapes", True), ("saved_models/shapes", False)]
