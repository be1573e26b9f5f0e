"""The examples run end to end (the notebook walkthrough asserts its own results)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossgrad.testing import frameworks

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(len(frameworks.selected()) < 2,
                    reason="the walkthrough uses both backends")
def test_notebook_walkthrough_runs():
    """The walkthrough runs to its end and prints every section (its speed is the
    benchmark's business: no clock here)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_ENABLE_X64": "0"}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook_walkthrough.py")], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for heading in ("## Jacobian of tanh", "## Hessian of tanh", "## Batched", "## The critic", "(a) ", "(b) jacrev: expected distinct argnums", "(c) "):
        assert heading in result.stdout


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


def _run_readme_section(heading: str) -> str:
    """The first Python block under ``heading`` in the README, run as a script: its stdout."""
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_ENABLE_X64": "0"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.skipif(len(frameworks.selected()) < 2, reason="the example uses both backends")
def test_readme_jit_example_runs_as_written():
    """The README's cg.jit example, extracted from the README and run as a script."""
    out = _run_readme_section("## Which backend, which route")
    shape, diff = out.strip().splitlines()[-1].split(" max |torch - jax| = ")
    assert shape == "(64, 33, 31, 31)"
    assert float(diff) < 1e-4


def readme_blocks() -> list[tuple[str, str]]:
    """Every Python block of the README, with the heading it sits under."""
    text = (ROOT / "README.md").read_text()
    blocks, heading = [], ""
    for part in text.split("```"):
        lines = part.splitlines()
        if lines and lines[0].strip() == "python":
            blocks.append((heading, "\n".join(lines[1:])))
        else:
            headings = [line for line in lines if line.startswith("#")]
            heading = headings[-1] if headings else heading
    return blocks


@pytest.mark.skipif(len(frameworks.selected()) < 2, reason="the README uses both backends")
@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_every_readme_block_runs_as_written(index):
    heading, code = readme_blocks()[index]
    if "Which backend, which route" in heading:
        pytest.skip("run, with its output checked, by test_readme_jit_example_runs_as_written")
    if "One call, file by file" in heading:
        pytest.skip("run, with its output checked, by test_the_readme_walk_quotes_the_plan_that_runs")
    if "Sparse Jacobians and Hessians" in heading:
        pytest.skip("run, with its output checked, by test_readme_sparse_example_runs_as_written (slow suite)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_ENABLE_X64": "0"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"README block under {heading!r}:\n{result.stderr[-3000:]}"


@pytest.mark.skipif("torch" not in frameworks.selected(), reason="the walk is torch's")
def test_the_readme_walk_quotes_the_plan_that_runs(capsys):
    """The README's walk of one call quotes the plan the call follows: its block run here,
    its output the text block after it."""
    section = (ROOT / "README.md").read_text().split("### One call, file by file", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    quoted = section.split("```python\n", 1)[1].split("```\n\n```\n", 1)[1].split("```", 1)[0]
    import torch

    with torch.random.fork_rng():  # the block draws from torch's global generator, as a user's script does
        exec(compile(code, "README walk", "exec"), {})
    assert capsys.readouterr().out == quoted


@pytest.mark.skipif(len(frameworks.selected()) < 2, reason="the example uses both backends")
def test_models_example_matches_the_frameworks():
    pytest.importorskip("equinox")
    pytest.importorskip("flax")
    out = _run_example("models.py")
    assert "torch nn.Module" in out and "equinox MLP: grad is an MLP (activation: None)" in out
    assert "flax nnx: grad is a State" in out


@pytest.mark.skipif(len(frameworks.selected()) < 2, reason="the example uses both backends")
def test_sparse_newton_example_converges_on_both_backends():
    out = _run_example("sparse_newton.py")
    final = [line.split("= ")[1] for line in out.splitlines() if "max u" in line]
    assert len(final) == 2 and final[0] == final[1], out
    residuals = [float(line.rsplit("= ", 1)[1]) for line in out.splitlines() if "|F(u)|" in line]
    assert min(residuals) < 1e-8, out


@pytest.mark.skipif(len(frameworks.selected()) < 2, reason="the example uses both backends")
def test_readme_sparse_example_runs_as_written():
    """The README's sparse example, extracted from the README and run as a script: the same
    Hessian on both backends."""
    lines = _run_readme_section("## Sparse Jacobians and Hessians").splitlines()
    assert "3 colors (symmetric)" in lines[0] and lines[1] == "torch.Size([4096, 4096]) 12286"
    assert float(lines[2].split()[-1]) < 1e-2  # torch against jax, fp32 entries up to ~1200
