"""scripts/kernel_report.py compiles a kernel for sm_90 and reports what the compiler made of it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_report_has_a_row_of_numbers_per_tile(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_DEFAULT_FP_FUSION="1", TMPDIR=str(tmp_path))
    result = subprocess.run([sys.executable, "scripts/kernel_report.py", "--kernels", "fwd", "--first-only"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| fwd |")]
    assert len(rows) == 1, result.stdout
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    shared_kib, conversions, wide_copies = int(cells[2]), int(cells[5]), int(cells[6])
    # The plain forward: K and V tiles staged through shared memory by 16-byte asynchronous copies.
    assert shared_kib > 0 and wide_copies > 0 and conversions >= 0


def test_report_refuses_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "scripts/kernel_report.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "without TRITON_INTERPRET" in result.stderr
