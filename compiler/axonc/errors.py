"""The axonc error hierarchy: every error a user can cause is one of these.

Each message names what was wrong and what was expected, so a user can fix the
model, the option or the file without reading axonc's source.
"""

from __future__ import annotations


class AxoncError(Exception):
    """Base class of every error axonc raises on purpose."""


class OptionError(AxoncError, ValueError):
    """A layer option is missing, unknown, of the wrong type or out of range."""


class ShapeError(AxoncError, ValueError):
    """Input shapes or dtypes do not fit an op's rule."""


class DTypeError(ShapeError):
    """An input's dtype does not fit an op's rule (integer ids into `embedding`, ...)."""


class GraphError(AxoncError, ValueError):
    """The graph itself is invalid: duplicate names, cycles, dangling inputs."""


class UnknownOpError(GraphError):
    """An op name that is not in the registry."""


class InputError(AxoncError, ValueError):
    """Data handed to a built model does not match its inputs."""


class StateError(AxoncError, KeyError):
    """A parameter or state value is missing or has the wrong shape."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NoGradientError(AxoncError, NotImplementedError):
    """A parameter's gradient passes through ops without a VJP rule (all are named)."""


class TraceError(AxoncError, TypeError):
    """A function traced into a custom layer did something tracing cannot record."""


class UnsupportedOpsError(AxoncError, NotImplementedError):
    """A backend cannot express some layers of the graph; every one is named with its reason.

    `problems` holds (layer, op, reason) triples, so callers can list or filter them.
    """

    def __init__(self, backend: str, problems: list[tuple[str, str, str]]):
        self.backend = backend
        self.problems = list(problems)
        lines = [f"  {layer} ({op}): {reason}" for layer, op, reason in self.problems]
        super().__init__(
            f"{len(self.problems)} layer(s) cannot be exported to {backend}:\n" + "\n".join(lines)
        )


class FormatError(AxoncError, ValueError):
    """A model file is malformed, truncated, of an unknown version or hostile."""


class ShapeHintWarning(UserWarning):
    """Data contradicts an input's declared shape; the data wins (a declared shape is a hint)."""
