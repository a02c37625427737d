"""The GPU check's script runs end to end on the CPU (its CUDA figures then say why they are n/a),
and a CUDA step on a machine without CUDA answers with a line, not a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu_and_prints_its_table(tmp_path):
    out = subprocess.run(["bash", "scripts/gpu-check.sh", "--device", "cpu", "--json", str(tmp_path / "rows.json")],
                         capture_output=True, text=True, cwd=ROOT, timeout=400,
                         env={**os.environ, "PYTHON": sys.executable, "GPU_WHEELS": str(tmp_path / "none")})
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {row["step"]: row for row in json.loads((tmp_path / "rows.json").read_text())}
    assert list(rows) == ["bench-eval", "airbench", "gpu-figures", "quick-eval"]
    assert all(row["status"] == "ok" for row in rows.values()), rows
    assert rows["bench-eval"]["engine_samples_per_s"] > 0 and rows["airbench"]["reference_samples_per_s"] > 0
    assert rows["airbench"]["engine_compiled"].startswith("n/a on cpu")
    assert rows["gpu-figures"]["engine_train_s"] <= rows["gpu-figures"]["wall_s"]
    assert rows["quick-eval"]["devices"] == ["cpu"] and rows["quick-eval"]["val_accuracy_mean"] > 0.3
    assert "step         status" in out.stdout and "Traceback" not in out.stdout + out.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a machine with CUDA measures instead")
def test_a_cuda_step_without_cuda_says_so_in_one_line():
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--step", "airbench", "--device", "cuda"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stderr
    row = json.loads(out.stdout.strip().splitlines()[-1].removeprefix("GPU_CHECK_ROW "))
    assert row["status"] == "skipped" and row["note"].startswith("CUDA not available to torch")
