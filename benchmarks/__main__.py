"""``python -m benchmarks [pytest args]``: run the benchmark and print the report.

Extra arguments go to pytest (``-k 'B64'`` selects cases or implementations).  A run
with a selection writes its report under a name that carries the selection, so it
never replaces the full report of the day; ``python -m benchmarks.report`` merges parts.
Exits non-zero when an implementation's result disagrees with the reference.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import pytest

    if "-k" in argv:
        os.environ["CROSSGRAD_BENCH_SELECTION"] = argv[argv.index("-k") + 1]
    here = Path(__file__).parent
    args = [str(here / "test_bench.py"), "-p", "no:terminal", "-p", "no:cacheprovider", "--rootdir", str(here.parent),
            "-o", "python_files=test_bench.py", "--benchmark-disable-gc", *argv]
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
