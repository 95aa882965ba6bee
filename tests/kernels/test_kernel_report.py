"""scripts/kernel_report.py compiles a kernel for sm_90 and reports what the compiler made of it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compiler_env(tmp_path) -> dict:
    """The environment of a subprocess that compiles for sm_90: no interpreter, Triton's cache
    in tmp_path."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_DEFAULT_FP_FUSION="1", TMPDIR=str(tmp_path))
    return env


@pytest.mark.timeout(600)
def test_report_has_a_row_of_numbers_per_tile(tmp_path):
    env = compiler_env(tmp_path)
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


@pytest.mark.timeout(600)
def test_register_cap_reaches_ptxas(tmp_path):
    # The relative-bias forward takes about 170 registers uncapped; a tuning tile's
    # max_registers must reach ptxas (two programs of 8 warps per SM, four of 4).
    env = compiler_env(tmp_path)
    script = (
        "from megatron_lite_kernels.flash_attention.forward import fwd_kernel\n"
        "from megatron_lite_kernels.flash_attention.tuning import ROW_MAJOR_TILES, Tile\n"
        "from megatron_lite_kernels.sm90_compile import FEATURES, compile_for_sm90, resource_report\n"
        "flags = {f: f in ('CAUSAL', 'HAS_REL_BIAS') for f in FEATURES}\n"
        "tile = Tile(64, 64, 4, 3, 128)\n"
        "assert tile in ROW_MAJOR_TILES[64]\n"
        "constexprs = {**flags, 'EVEN_M': True, 'HEAD_DIM': 64, 'BLOCK_D': 64,\n"
        "              'DOT_PRECISION': 'tf32', 'BLOCK_M': tile.block_m, 'BLOCK_N': tile.block_n}\n"
        "for cap in (None, tile.max_registers):\n"
        "    print(resource_report(compile_for_sm90(fwd_kernel, constexprs, num_warps=tile.warps,\n"
        "        num_stages=tile.stages, max_registers=cap, aligned=True))['registers'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    uncapped, capped = result.stdout.split()
    if uncapped == "None":
        pytest.skip("no ptxas here takes this PTX version")
    assert int(uncapped) > 128 >= int(capped)


@pytest.mark.timeout(600)
def test_gradient_kernel_is_reported_on_the_tiles_its_launcher_uses(tmp_path):
    # With a causal mask the relative bias's gradient kernel walks a tile of its own (64 x 64 at
    # D = 64), not the dk/dv kernel's first tuning tile (64 x 128).
    env = compiler_env(tmp_path)
    result = subprocess.run([sys.executable, "scripts/kernel_report.py", "--kernels", "relgrad",
                             "--features", "CAUSAL,HAS_REL_BIAS", "--first-only"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| relgrad |")]
    assert len(rows) == 1 and rows[0].split("|")[2].strip().startswith("64 x 64,"), result.stdout
