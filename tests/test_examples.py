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
