"""crossgrad's exceptions.

Every error crossgrad raises on purpose is a :class:`CrossgradError` and also a
``TypeError`` (a wrong kind of thing) or a ``ValueError`` (the right kind, a wrong
value), so existing ``except TypeError`` / ``except ValueError`` code keeps working.
Messages follow one pattern, built by :func:`message`: which transform, what was
expected, what was received, how to fix it.  Validation lives in shared code
(:mod:`crossgrad.spec`), so both backends raise the same type with the same text.
"""

from __future__ import annotations


def message(transform: str, expected: str, received: str, fix: str) -> str:
    """The one layout of every crossgrad error message."""
    return f"{transform}: expected {expected}, but got {received}. {fix}"


class CrossgradError(Exception):
    """Base class of every error crossgrad raises on purpose."""

    def __init__(self, transform: str, expected: str, received: str, fix: str):
        self.transform = transform
        super().__init__(message(transform, expected, received, fix))


class CrossgradTypeError(CrossgradError, TypeError):
    """A value of the wrong kind."""


class CrossgradValueError(CrossgradError, ValueError):
    """A value of the right kind but outside what is allowed."""


class ArgnumsTypeError(CrossgradTypeError):
    """``argnums`` is not an int or a tuple/list of ints (a float, a bool, a string...)."""


class ArgnumsError(CrossgradValueError):
    """``argnums`` is out of range, duplicated or empty."""


class HasAuxError(CrossgradTypeError):
    """``has_aux=True`` but the function did not return an ``(output, aux)`` pair."""


class InputDtypeError(CrossgradTypeError):
    """A differentiated input is not a real floating-point array."""


class OutputError(CrossgradTypeError):
    """The function returned something that is not an array (or a pytree of arrays)."""


class ComplexOutputError(CrossgradTypeError):
    """A reverse-mode or loop route (or grad, hvp) got a complex output of real inputs:
    its vjp would keep only the real part, so crossgrad refuses, as jax does."""


class GradientCheckError(CrossgradValueError):
    """:func:`check_grads` found forward mode, reverse mode and finite differences to
    disagree beyond the tolerance."""


class NonScalarOutputError(CrossgradValueError):
    """A transform that needs a scalar output (grad, value_and_grad, hvp) got a non-scalar."""


class AxisError(CrossgradValueError):
    """A vmap axis is out of range, or ``in_axes``/``out_axes`` do not match the arguments."""


class SampleShapeError(CrossgradValueError):
    """A shape error inside a batched function: what it was given per sample (the batch axis
    removed) is named."""


class AxisSizeError(CrossgradValueError):
    """The batched arguments of a vmap disagree on the size of the mapped axis."""


class StructureError(CrossgradValueError):
    """Two pytrees that must match do not (tangents vs primals, cotangents vs outputs)."""


class GraphInputError(CrossgradValueError):
    """``crossgrad.graph``: an input that is not in the output's graph (unused, or not
    requiring grad)."""


class InputMutationError(CrossgradValueError):
    """The transformed function modified one of its inputs in place."""


class ControlFlowError(CrossgradTypeError):
    """The transformed function branches (``if``, ``bool()``, ``int()``) on a traced array's value."""


class CustomRuleError(CrossgradTypeError):
    """A custom derivative rule (a torch ``autograd.Function``) the transforms cannot use as written."""


class RandomnessError(CrossgradValueError):
    """The vmapped function draws random numbers from the framework's global generator."""


class SparsityPatternError(CrossgradValueError):
    """A sparsity pattern passed to a sparse transform that cannot be this function's
    (wrong shape, not 2-D, not an array)."""


class SparsityCheckError(CrossgradValueError):
    """``check=True`` on a sparse transform: the sparse result disagrees with dense products
    on random directions (the pattern given misses entries the function has)."""


class SparsitySupportError(CrossgradTypeError):
    """A sparse transform given what it does not take: more than one differentiated array,
    or a function whose output is not one array."""


class OptionError(CrossgradValueError):
    """An unknown ``mode``, ``strategy`` or ``impl``, or a bad ``chunk_size``."""


class UnknownOptionError(CrossgradTypeError):
    """A keyword the transform does not take (``in_dims=`` where crossgrad says ``in_axes=``)."""


class ForeignFunctionError(CrossgradTypeError):
    """A function written for the other framework (torch operations given jax arrays, or jax
    operations given torch tensors)."""


class OptionTypeError(CrossgradTypeError):
    """An option of the wrong type (``has_aux`` not a bool, ``chunk_size`` not an int...)."""


class UnsupportedOptionError(CrossgradValueError):
    """``impl="builtin"`` was asked for with an option the framework's built-in lacks."""


class MixedFrameworksError(CrossgradTypeError):
    """Torch tensors and jax arrays in one call, or arrays of the other framework."""


class BackendInferenceError(CrossgradTypeError):
    """The top-level API found no torch tensor or jax array to pick a backend from."""


class X64DisabledError(CrossgradTypeError):
    """A float64 input for the jax backend while jax's x64 mode is off."""


class BackendUnavailableError(CrossgradError, ImportError):
    """The framework behind a backend is not installed."""


class SparsityWarning(UserWarning):
    """A sparse transform met operations without a sparsity rule: each output element of them
    is taken to depend on every element of their operands (the pattern is a superset)."""


class CompileFallbackWarning(UserWarning):
    """:func:`crossgrad.jit`: compilation failed (or, with ``check=True``, disagreed with
    eager execution) and the function runs eagerly instead; issued once per function."""


class ChunkError(CrossgradError, RuntimeError):
    """:func:`crossgrad.stream_to`: one chunk of the batch failed.  ``start`` and ``stop``
    are its rows, ``done`` the rows already written (all valid); resume with ``start=done``."""

    def __init__(self, transform: str, expected: str, received: str, fix: str, *, index: int, start: int,
                 stop: int, done: int):
        self.index, self.start, self.stop, self.done = index, start, stop, done
        super().__init__(transform, expected, received, fix)
