"""Every `mirrorgan-tf` command of the README that needs no download runs as written.

Commands are read from the README's bash blocks (continuation lines joined) and run in a fresh
folder holding the repository's `saved_models/`, as a newcomer on a fresh clone would run them.
Each command that is not run is left out for a stated reason (a download, a training run made
by the commands before it, a placeholder, the 20-minute demo), and the test checks that the
README still has commands of the kinds it runs.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
# Why a command is not run here: the first reason whose marker it contains.
NOT_RUN = {
    "runs/": "uses a training run (the training code is tested in tests/training)",
    "data/": "needs a downloaded dataset (CUB, COCO)",
    "DAMSMencoders/": "needs the published checkpoints",
    "presets/attngan": "needs the converted published checkpoints",
    "/shared/": "needs a cluster",
    "PREFIX": "a placeholder",
    "mirrorgan-tf demo": "the 20-minute demo (`make demo`)",
}


def readme_commands() -> list[str]:
    """The `mirrorgan-tf ...` lines of the README's bash blocks, continuations joined."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("mirrorgan-tf "):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def why_not_run(command: str) -> str | None:
    return next((why for marker, why in NOT_RUN.items() if marker in command), None)


def test_the_readme_has_commands_of_every_kind():
    commands = readme_commands()
    runnable = [c for c in commands if why_not_run(c) is None]
    for start in ("mirrorgan-tf info", "mirrorgan-tf generate --model saved_models/shapes",
                  "mirrorgan-tf export --model saved_models/shapes",
                  "mirrorgan-tf evaluate --model saved_models/shapes"):
        assert any(c.startswith(start) for c in runnable), start
    assert len(commands) > len(runnable)  # the reasons above are in use


@pytest.mark.slow
def test_every_readme_command_that_needs_no_download_runs_as_written(tmp_path):
    os.symlink(os.path.join(ROOT, "saved_models"), tmp_path / "saved_models")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    ran = []
    for command in readme_commands():
        if why_not_run(command) is not None:
            continue
        argv = [sys.executable, "-m", "mirrorgan_tf", *shlex.split(command)[1:]]
        run = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env,
                             timeout=900)
        assert run.returncode == 0, (command, run.stdout[-2000:], run.stderr[-3000:])
        assert "Traceback" not in run.stderr and "error:" not in run.stderr, command
        ran.append(command)
    assert len(ran) >= 4, ran
    # What they wrote is there.
    assert (tmp_path / "grid.png").exists()
    assert (tmp_path / "serving" / "shapes" / "2" / "saved_model.pb").exists()
    assert (tmp_path / "report.json").exists()
