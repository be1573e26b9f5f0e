"""The framework's refusals of what a transformed function does, named as crossgrad errors:
each failure cause a backend's ``failure_cause`` reports (data-dependent control flow, global
randomness under vmap, in-place writes, the other framework's operations, ...) with the
error, what was expected, what was received and how to fix it."""

from __future__ import annotations

from crossgrad import errors, spec
from crossgrad.backends.base import Backend


def mutation_error(transform: str, what: str) -> errors.InputMutationError:
    return errors.InputMutationError(
        transform, "a function that leaves its inputs unchanged", what,
        "Use out-of-place operations (y = x * 2 rather than x.mul_(2)), or work on a copy (x.clone()).")


def _foreign_error(transform: str, backend: str, calls_other: bool, exc: BaseException) -> errors.ForeignFunctionError:
    """The function calls the other framework's operations (``calls_other``), or computes
    with an array of the other framework that it holds."""
    other = "jax" if backend == "torch" else "torch"
    first = str(exc).splitlines()[0][:160]
    if calls_other:
        return errors.ForeignFunctionError(
            transform, f"a function written with {backend}'s operations for the {backend} arrays it is given",
            f"a function that calls {other}'s operations ({first})",
            f"Call it with {other} arrays (crossgrad picks the backend from the arrays; crossgrad.to_{other}(x) "
            f"converts them), or write it with {backend}'s operations.")
    return errors.ForeignFunctionError(  # the function uses an array of the other framework it holds
        transform, f"a function that computes with {backend} arrays only",
        f"a {other} array it closes over or builds ({first})",
        f"Convert that array once, outside the function: crossgrad.to_{backend}(array).")


# The framework's refusals crossgrad names, by failure cause: the error, what the transform
# expected, what it received and how to fix it.
_REFUSALS: dict[str, tuple[type[errors.CrossgradError], str, str, str]] = {
    "control flow": (
        errors.ControlFlowError, "a function whose Python control flow does not depend on array values",
        "an if, bool(), int() or float() on an array being transformed",
        "Select with where(cond, a, b) (torch.where / jnp.where) instead of branching, or compute the "
        "condition outside the transformed function and pass it in."),
    "dynamic shape": (
        errors.ControlFlowError, "a function whose array shapes do not depend on array values",
        "boolean-mask indexing (x[mask]) or another operation whose output shape depends on values",
        "Keep the shape fixed: where(mask, x, 0) instead of x[mask], then reduce."),
    "old-style function": (
        errors.CustomRuleError, "an autograd.Function written for torch.func (forward without ctx, and setup_context)",
        "an autograd.Function whose forward takes ctx (torch.func refuses it)",
        "Write forward(*inputs) and setup_context(ctx, inputs, output) (torch's 'Extending torch.func' "
        "form); add jvp for forward mode."),
    "value read": (
        errors.ControlFlowError, "a function that keeps array values in the framework while it is transformed",
        ".tolist(), .numpy() or .item() on an array being transformed (it holds no values yet)",
        "Compute with the framework's operations instead of Python or NumPy values, or read the values "
        "outside the transformed function and pass them in."),
    "unbatched write": (
        errors.InputMutationError, "a function that writes in place only into arrays of its own",
        "an in-place write of a batched value into an array without the batch (a closed-over buffer, "
        "under vmap) or of a larger shape than the array",
        "Return the value instead of accumulating it in place (buf = buf + x out of place, or sum the "
        "transform's result afterwards)."),
    "captured write": (
        errors.InputMutationError, "a function that writes in place only into arrays it is given or makes",
        "an in-place write into a closed-over array (a buffer: a module closed over rather than passed, "
        "a training-mode norm layer updating its running statistics)",
        "Pass the module as an argument (a training-mode BatchNorm then updates its statistics once per "
        "call, NOTE [statistics once per call]), or call model.eval() around the transform (the "
        "statistics are read, not updated); a buffer of your own: return the new value instead of "
        "writing it."),
}


def named(transform: str, backend: Backend, cause: str | None, exc: Exception) -> errors.CrossgradError | None:
    """The crossgrad error for the framework's refusal ``exc`` of cause ``cause`` (None: not
    one crossgrad names)."""
    if cause in ("foreign function", "foreign array"):
        return _foreign_error(transform, backend.name, cause == "foreign function", exc)
    if cause == "mutation":
        return mutation_error(transform, "an in-place operation on an input")
    if cause == "randomness":
        if transform in spec.TAKE_RANDOMNESS:
            how = ("Pass randomness='different' (one draw per sample, e.g. dropout) or randomness='same' (one "
                   f"draw for the batch) to {transform}, or draw the random numbers outside and pass them in.")
        else:
            how = (f"{transform} has no randomness option: draw from a generator the function makes or is "
                   "given (torch.Generator, a jax key) outside the transform, or draw the random numbers "
                   "outside and pass them in.")
        return errors.RandomnessError(transform, "a deterministic function under vmap",
                                      "a call to a random operation of the framework's global generator", how)
    if cause in _REFUSALS:
        kind, expected, received, fix = _REFUSALS[cause]
        return kind(transform, expected, received, fix)
    return None
