"""The labels of the rows the report reads by role: written once, for implementations.py
(which makes the rows) and report.py (which finds them)."""

AUTO = "cg auto"
JIT = "cg jit"
EAGER = "cg auto (eager, no jit)"
