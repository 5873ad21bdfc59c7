"""scripts/gpu_check.sh, the GPU checks of issue 47: where no GPU is, it runs to its SKIP lines."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs its checks")
def test_gpu_check_runs_to_its_skip_lines_without_a_gpu():
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        ["bash", str(root / "scripts" / "gpu_check.sh")],
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    verdicts = [line for line in done.stdout.splitlines() if line.split(" ")[0] in ("PASS", "FAIL", "SKIP")]
    assert len(verdicts) >= 16 and all(line.startswith("SKIP ") for line in verdicts), done.stdout
    assert "ddp 2 processes convnext_atto: needs 2 CUDA GPU(s)" in done.stdout
