"""The examples run end to end (the notebook walkthrough asserts its own results)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossgrad.testing import frameworks

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(len(frameworks.selected()) < 2,
                    reason="the walkthrough uses both backends")
def test_notebook_walkthrough_runs_in_under_a_minute():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_ENABLE_X64": "0"}
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook_walkthrough.py")], env=env,
                            capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    assert result.returncode == 0, result.stderr[-3000:]
    for heading in ("## Jacobian of tanh", "## Hessian of tanh", "## Batched", "## The critic", "(a) ", "(b) jacrev: expected distinct argnums", "(c) "):
        assert heading in result.stdout
    assert elapsed < 60, f"the walkthrough took {elapsed:.0f} s"


def _run_example(name: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_ENABLE_X64": "0"}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.skipif(len(frameworks.selected()) < 2, reason="the example uses both backends")
def test_memory_bounded_example_chunks_and_agrees():
    out = _run_example("memory_bounded.py", "--batch", "256", "--budget", "1000000")
    assert out.count("rows per chunk") == 2 and "torch: 256 per-sample Hessians" in out and "jax: 256" in out


@pytest.mark.skipif(len(frameworks.selected()) < 2, reason="the example uses both backends")
def test_scale_out_example_runs():
    out = _run_example("scale_out.py")
    assert "jax: 4 devices" in out and "torch rank 1/2" in out and "stream: 512 rows written" in out


@pytest.mark.skipif(len(frameworks.selected()) < 2, reason="the example uses both backends")
def test_readme_jit_example_runs_as_written():
    """The README's cg.jit example, extracted from the README and run as a script."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Which backend, which route", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_ENABLE_X64": "0"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    shape, diff = result.stdout.strip().splitlines()[-1].split(" max |torch - jax| = ")
    assert shape == "(64, 33, 31, 31)"
    assert float(diff) < 1e-4


@pytest.mark.skipif("torch" not in frameworks.selected(), reason="the example uses torch")
def test_readme_laplacian_example_runs_as_written():
    """The README's Laplacian example, extracted from the README and run as a script
    (its asserts compare the Taylor route with the nested baseline)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Laplacians, Hessian traces and diagonals", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    code += "\nprint(lap.shape, diag.shape, abs(float(top[0] - torch.linalg.eigvalsh(H.dense())[-1])) < 1e-3)\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "torch.Size([256]) torch.Size([256, 2]) True"
