"""The prepared device check (tools/device_check.py) runs its steps and leaves its files: tested on the CPU, since
device time is too scarce to debug a script on the GPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.suite import ROOT, subprocess_environment


def test_the_device_check_runs_every_step_and_leaves_its_files(tmp_path):
    pytest.importorskip("torch", reason="needs torch: pip install 'lstm-conformance[torch]'")
    pytest.importorskip("jax", reason="needs jax: pip install 'lstm-conformance[jax]'")
    done = subprocess.run(
        [sys.executable, "-m", "tools.device_check", str(tmp_path), "--device", "cpu", "--budget", "500", "--workers",
         "1", "-k", "torch/peephole and T1", "--bench-k", "torch/peephole-cpu-mnist-rows-forward-standard-float32"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=subprocess_environment())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "conformance.json", "conformance.md", "log.txt",
                                                           "machine.json", "tf32.json"]
    assert json.loads((tmp_path / "machine.json").read_text())["device"] == "cpu"
    judged = json.loads((tmp_path / "conformance.json").read_text())["results"]
    passed = {r["dtype"] for r in judged if r["status"] == "pass"}
    assert passed == {"float32", "float64", "bfloat16", "float16"}, judged
    assert {r["status"] for r in judged} <= {"pass", "not supported"}, [r for r in judged if r["status"] != "pass"]
    # TF32 does not exist on the CPU: the float32 rows stay far inside the spec's TF32 evaluation's error.
    tf32 = json.loads((tmp_path / "tf32.json").read_text())
    assert set(tf32["rows"]) == {"torch/nn.LSTM", "jax/lax.scan"}
    medium = tf32["rows"]["torch/nn.LSTM"]["medium"]
    assert medium["status"] == "pass" and medium["ratio_to_tf32_evaluation"] < 0.1, medium
    assert len(json.loads((tmp_path / "bench.json").read_text())["benchmarks"]) == 1
    assert "steps: {'conformance': 0, 'tf32': 0, 'bench': 0}" in (tmp_path / "log.txt").read_text()
