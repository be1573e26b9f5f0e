"""Shared by crossgrad's tests and benchmarks: the problem catalog and array helpers.

Nothing here is imported by ``import crossgrad``; NumPy is needed.
"""
