"""The benchmark scripts run end to end and print the JSON their README tables are read from.

Smoke runs on the small `shapes` preset (random weights, one timed repeat): they check that
each script still runs against today's package and reports its keys, not the timings
(speed is measured by the scripts themselves, never asserted here). `generate.py` was once
broken for weeks by a signature change that no test exercised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")


def _run(script: str, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, script), *args],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout[result.stdout.index("{"):])


@pytest.mark.slow
def test_train_step_benchmark_reports_time_and_flop_rate():
    report = _run("train_step.py", "--preset", "shapes", "--batch-size", "2", "--repeats", "1",
                  "--no-breakdown")
    assert report["preset"] == "shapes" and report["batch_size"] == 2
    assert report["seconds_per_iteration"] > 0
    assert report["nominal_gflop_per_iteration"] > 0
    assert report["matmul_gflop_per_second_float32"] > 0
    assert 0 < report["ratio_to_float32_matmul"]
    assert "seconds_by_network" not in report


@pytest.mark.slow
def test_generate_benchmark_times_every_path():
    report = _run("generate.py", "--preset", "shapes", "--skip-tflite", "--batch-sizes", "1,2",
                  "--repeats", "1")
    latency = report["latency_ms_per_image"]
    assert set(latency) == {
        "keras_eager", "task_generate", "tf_function", "saved_model", "saved_model_bfloat16"
    }
    for per_batch in latency.values():
        assert set(per_batch) == {"1", "2"} and all(ms > 0 for ms in per_batch.values())
    assert report["sizes_mb"]["saved_model"] > 0


def test_against_torch_refuses_a_configuration_without_a_published_counterpart():
    result = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.path.insert(0, sys.argv[1]); import torch_published;"
         "from mirrorgan_tf import presets;"
         "torch_published.build(presets.get_config('shapes'))", BENCHMARKS],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "birds" in result.stderr
