"""The Colab notebooks: committed without outputs, and every cell runs in smoke mode.

Smoke mode (`MIRRORGAN_SMOKE=1`) swaps downloads for the built-in or a miniature dataset, uses
tiny networks and a few steps, and skips only the cells that need the network or a TF Serving
binary. Each notebook runs in a fresh kernel started from this interpreter (not whatever
`python3` kernel spec the machine has), in a temporary working folder.
"""

import json
import os
import sys

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(REPO, "notebooks")
NOTEBOOKS = ["quickstart", "train_birds", "finetune_from_published_weights", "serve"]
COLAB_URL = "https://colab.research.google.com/github/OWNER/mirrorgan_tf/blob/main/notebooks/{}"
SMOKE_LINE = 'SMOKE = os.environ.get("MIRRORGAN_SMOKE") == "1"'
CELL_TIMEOUT_S = 600


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(os.path.join(NOTEBOOK_DIR, f"{name}.ipynb"), as_version=4)


def test_the_notebook_folder_holds_exactly_the_four_notebooks():
    found = sorted(n[: -len(".ipynb")] for n in os.listdir(NOTEBOOK_DIR) if n.endswith(".ipynb"))
    assert found == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_stripped_with_badge_and_parameters(name):
    nb = _read(name)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}.ipynb cell {i} has outputs: strip them"
            assert cell.execution_count is None, f"{name}.ipynb cell {i} has an execution count"
    first, second = nb.cells[0], nb.cells[1]
    assert first.cell_type == "markdown"
    assert "colab-badge.svg" in first.source
    assert COLAB_URL.format(f"{name}.ipynb") in first.source
    assert second.cell_type == "code" and second.source.startswith("# Parameters")
    assert SMOKE_LINE in second.source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_code_cell_is_valid_ipython(name):
    from IPython.core.inputtransformer2 import TransformerManager

    transform = TransformerManager().transform_cell
    for i, cell in enumerate(_read(name).cells):
        if cell.cell_type == "code":
            compile(transform(cell.source), f"{name}.ipynb cell {i}", "exec")


def _kernel_manager(kernel_dir: str):
    """A kernel manager whose `python3` kernel is this interpreter, whatever is installed."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = os.path.join(kernel_dir, "python3")
    os.makedirs(spec_dir, exist_ok=True)
    python_path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mirrorgan_tf smoke",
        "language": "python",
        "env": {
            "MIRRORGAN_SMOKE": "1",
            "MIRRORGAN_REPO_DIR": REPO,
            "PYTHONPATH": python_path,  # this checkout, whatever is installed
            "TF_CPP_MIN_LOG_LEVEL": "2",
        },
    }
    with open(os.path.join(spec_dir, "kernel.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f)
    return KernelManager(
        kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernel_dir])
    )


# Smoke-run times on 2 shared CPU cores: quickstart ~20 s (default suite), train_birds ~90 s,
# finetune_from_published_weights ~60 s, serve ~50 s (slow: more than ~30 s each).
SMOKE_RUNS = [
    "quickstart",
    pytest.param("train_birds", marks=pytest.mark.slow),
    pytest.param("finetune_from_published_weights", marks=pytest.mark.slow),
    pytest.param("serve", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", SMOKE_RUNS)
def test_notebook_runs_in_smoke_mode(name, tmp_path):
    from nbclient import NotebookClient

    nb = _read(name)
    work = tmp_path / "work"
    work.mkdir()
    km = _kernel_manager(str(tmp_path / "kernels"))
    client = NotebookClient(
        nb,
        km=km,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(work)}},
    )
    try:
        client.execute()  # raises CellExecutionError, with the traceback, on any error
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    # The smoke run wrote into the temporary folder, not into the repository.
    assert any(work.iterdir())
