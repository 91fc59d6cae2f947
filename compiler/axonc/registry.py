"""The op registry: every op is one `Op` subclass holding all of its rules.

An op module declares, side by side, its options (defaults and validation), its
parameters and state, its shape/dtype rule, its numpy reference implementation
and its test cases. Layer constructors are generated from, or written next to,
the op; the interpreter, shape inference, the file format and the tests all read
this registry, so adding an op is one module edit (DESIGN.md section 2).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, ClassVar

from .errors import OptionError, UnknownOpError

REQUIRED = object()  # marks an option without a default


@dataclass(frozen=True)
class Option:
    """One layer option: its default and a check that validates and normalises it.

    `check(value)` returns the normalised value or raises ValueError/TypeError with
    a message saying what was expected; the registry turns that into an
    OptionError naming the layer and the option.
    """

    default: Any = REQUIRED
    check: Callable[[Any], Any] | None = None
    doc: str = ""


@dataclass(frozen=True)
class ParamSpec:
    """A parameter or state tensor a layer owns.

    `path` is the key path below the layer's name in the parameter map: ("kernel",)
    or ("input_kernel", "wii") for recurrent gate maps. `initializer` is an
    initializer spec (see axonc.initializers). `kind` is "parameter" (trained) or
    "state" (updated by the forward pass in train mode, such as batch-norm mean).
    """

    path: tuple[str, ...]
    shape: tuple[int, ...]
    initializer: Any = "zeros"
    dtype: str = "f32"
    kind: str = "parameter"


@dataclass(frozen=True)
class Case:
    """A declared test case of an op: what to build and with which inputs.

    `build(*inputs)` receives `ax.input` handles built from `inputs` (a list of
    TensorTypes; use None for the batch dim) and returns the layer output. The
    op sweep runs every case through shape inference, both modes, save/load and
    (later) every backend.
    """

    name: str
    build: Callable[..., Any]
    inputs: Sequence[Any]
    modes: tuple[str, ...] = ("inference", "train")
    int_inputs: Mapping[int, int] = field(default_factory=dict)  # input index -> exclusive max
    # Float inputs are drawn uniformly from this range when given (ops with a domain,
    # such as log or sqrt), else from a standard normal.
    float_range: tuple[float, float] | None = None


class Op:
    """Base class of a registered op. Subclasses override the rules they need.

    Rules receive `types` (the input TensorTypes, containers of them, or None for
    a missing optional input) or `inputs` (numpy arrays, same structure), and the
    node's normalised `opts` (a dict with every option filled in).
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    doc: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    # Number of graph inputs; None means any number (a list, e.g. concatenate).
    arity: ClassVar[int | None] = 1
    # Inputs that may be missing (Axon.None) without nullifying the node.
    accepts_none: ClassVar[bool] = False
    # Inputs may be containers (tuples/lists/dicts of tensors); otherwise each must be a tensor.
    container_inputs: ClassVar[bool] = False
    # Primitives are the ops traced functions are made of (axonc.numpy).
    primitive: ClassVar[bool] = False
    # Subgraphs are layer graphs over the node's inputs (block, namespace), resolved with it.
    layer_bodies: ClassVar[bool] = False
    cases: ClassVar[list[Case]] = []

    def params(
        self, types: list[Any], opts: dict[str, Any], mode: str, node: Any
    ) -> list[ParamSpec]:
        """The parameters and state this node owns, given its input types and the mode."""
        return []

    def infer(self, types: list[Any], opts: dict[str, Any], node: Any) -> Any:
        """The output type (a TensorType or a container of them)."""
        raise NotImplementedError(f"op {self.name!r} has no shape rule")

    def forward(self, ctx: Any, inputs: list[Any], params: dict[str, Any], opts: dict[str, Any]):
        """The reference implementation in numpy.

        `ctx.mode` is "inference" or "train"; `ctx.node` is the node; `params` is the
        layer's nested parameter/state map; `ctx.set_state(key, value)` returns an
        updated state value in train mode; `ctx.run(subgraph, args)` runs a body.
        """
        raise NotImplementedError(f"op {self.name!r} has no reference implementation")

    def onnx(self, ctx: Any, inputs: list[Any], opts: dict[str, Any]) -> Any:
        """The ONNX lowering: emit nodes through `ctx.b` and return the output value names.

        Ops without one are reported, all at once, when a graph holding them is exported.
        """
        raise NotImplementedError(f"op {self.name!r} has no ONNX lowering")

    def tflite(self, ctx: Any, inputs: list[Any], opts: dict[str, Any]) -> Any:
        """The TFLite lowering (inference mode): emit operators through `ctx.b`, return tensors.

        A rule that cannot export some option raises `ctx.unsupported(reason)`; ops without
        a rule and such reasons are reported, all at once, when a graph holding them is
        exported.
        """
        raise NotImplementedError(f"op {self.name!r} has no TFLite lowering")

    def vjp(
        self, ctx: Any, inputs: list[Any], output: Any, cot: Any, opts: dict[str, Any]
    ) -> list[Any]:
        """The gradient rule: cotangents of the inputs given the output's cotangent `cot`.

        `inputs`, `output` and `cot` are symbolic tensors (axonc.numpy and Python
        operators build the result); return one cotangent per input (None where the
        input gets none) and report parameter gradients with `ctx.add_param_grad`.
        """
        raise NotImplementedError(f"op {self.name!r} has no gradient rule")

    def normalize_options(self, given: Mapping[str, Any], layer: str) -> dict[str, Any]:
        """Fill defaults, reject unknown options and run each option's check."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            valid = ", ".join(sorted(self.options)) or "none"
            raise OptionError(
                f"{layer}: unknown option(s) {', '.join(unknown)}; valid options are {valid}"
            )
        out: dict[str, Any] = {}
        for key, opt in self.options.items():
            if key in given:
                value = given[key]
            elif opt.default is REQUIRED:
                raise OptionError(f"{layer}: option {key!r} is required")
            else:
                value = opt.default
            if opt.check is not None:
                try:
                    value = opt.check(value)
                except (ValueError, TypeError) as exc:
                    raise OptionError(f"{layer}: option {key!r}: {exc}") from None
            out[key] = value
        return self.check_options(out, layer)

    def check_options(self, opts: dict[str, Any], layer: str) -> dict[str, Any]:
        """Cross-option validation; override to relate options to each other."""
        return opts


OPS: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add an op to the registry (its `name` must be new)."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no op name")
    if cls.name in OPS:
        raise TypeError(f"op {cls.name!r} is registered twice")
    OPS[cls.name] = cls()
    return cls


def load_ops() -> None:
    """Register every op family (a no-op once done).

    The registry sits below the op modules that register into it, so it names
    their modules to load (the plugin pattern) rather than importing them.
    """
    for family in import_module("axonc.ops").FAMILIES:
        import_module(f"axonc.ops.{family}")


def get_op(name: str) -> Op:
    """The registered op of that name, or an UnknownOpError listing the near misses."""
    if name not in OPS:
        load_ops()
    try:
        return OPS[name]
    except KeyError:
        close = difflib.get_close_matches(name, OPS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownOpError(f"unknown op {name!r}{hint}") from None


# Layer constructors exported as `axonc.<name>` and as `Axon.<name>` methods.
LAYERS: dict[str, Callable[..., Any]] = {}


def layer_api(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, method: bool = True
):
    """Decorator: export a layer constructor as `ax.<name>` and (by default) `x.<name>(...)`."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        key = name or f.__name__
        if key in LAYERS:
            raise TypeError(f"layer constructor {key!r} is defined twice")
        LAYERS[key] = f
        f._axon_method = method  # type: ignore[attr-defined]
        return f

    return wrap(fn) if fn is not None else wrap


# ---------------------------------------------------------------------------
# Reusable option checks. Each returns the normalised value or raises ValueError.


def check_int(lo: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or (not isinstance(v, int) and not _is_np_int(v)):
            raise TypeError(f"expected an integer, got {v!r}")
        if lo is not None and v < lo:
            raise ValueError(f"expected an integer >= {lo}, got {v!r}")
        return int(v)

    return check


def check_float(lo: float | None = None, hi: float | None = None, hi_open: bool = False):
    def check(v: Any) -> float:
        if isinstance(v, bool) or (not isinstance(v, (int, float)) and not _is_np_num(v)):
            raise TypeError(f"expected a number, got {v!r}")
        v = float(v)
        if lo is not None and v < lo:
            raise ValueError(f"expected a number >= {lo}, got {v}")
        if hi is not None and (v >= hi if hi_open else v > hi):
            raise ValueError(f"expected a number {'<' if hi_open else '<='} {hi}, got {v}")
        return v

    return check


def check_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, got {v!r}")
    return v


def check_choice(*choices: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"expected one of {', '.join(map(repr, choices))}, got {v!r}")
        return v

    return check


def check_optional(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        return None if v is None else inner(v)

    return check


def check_int_or_tuple(lo: int = 1) -> Callable[[Any], int | tuple[int, ...]]:
    """An int, or a tuple/list of ints (per spatial dim)."""
    one = check_int(lo)

    def check(v: Any) -> int | tuple[int, ...]:
        if isinstance(v, (list, tuple)):
            if not v:
                raise ValueError("expected an integer or a non-empty list of integers")
            return tuple(one(x) for x in v)
        return one(v)

    return check


def _is_np_int(v: Any) -> bool:
    import numpy as np  # at use: `import axonc.ir` (which imports this module) loads no numpy

    return isinstance(v, np.integer)


def _is_np_num(v: Any) -> bool:
    import numpy as np

    return isinstance(v, (np.integer, np.floating))
