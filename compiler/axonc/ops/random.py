"""Random sampling inside traced functions: `random_normal` and `random_uniform`.

What `anp.random_normal(t, mean, std)` / `anp.random_uniform(t, min_val, max_val)`
record on a traced tensor `t` (Nx.random_normal / Nx.random_uniform with a tensor
giving the shape): samples shaped like `t`, of its float dtype (f32 for integer
`t`). The option `seed` (None draws a fresh one when the op is recorded, as
dropout does) fixes the stream: the unit samples are
`axonc.initializers.initialize(spec, shape, "f32", seed)` with spec
normal(mean 0, scale 1) or uniform(scale 1) on (-1, 1), then
mean + std * z, or min + (u + 1) * (max - min) / 2, computed in f32.

The reference draws the unit samples itself; the ONNX graph takes them as a
host-drawn input `<node>/sample` (metadata `axonc.random_inputs`), which the
runtime fills with the same call, so the two agree exactly for a seed. The only
dynamic dim the input may have is the batch. In a model the seed is fixed when the
layer is traced, so every call draws the same samples (as the random initial
state of a recurrent layer); `value_and_grad` records its function on every call,
so a random op there draws fresh samples each time.

Gradients: the samples do not depend on `t`'s values, so `t` gets none; a
reparameterised sample `mu + sigma * eps` differentiates through mu and sigma.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from ..dtypes import TensorType, dtype_name, is_float, to_numpy_dtype
from ..errors import GraphError
from ..initializers import initialize
from ..ir import Axon, assign_names, make_node
from ..registry import Case, Op, Option, check_float, register

NORMAL = {"name": "normal", "mean": 0.0, "scale": 1.0}
UNIFORM = {"name": "uniform", "scale": 1.0}
RANDOM_OPS = ("random_normal", "random_uniform")


def _check_seed(v: Any) -> int:
    if v is None:
        return secrets.randbits(32)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < 2**32:
        raise TypeError(f"expected a seed in [0, 2**32) or None, got {v!r}")
    return int(v)


def _out_dtype(dtype: str) -> str:
    return dtype if is_float(dtype) else "f32"


class _Random(Op):
    """Shared rules: the shape of the input, the unit samples, the affine map in f32."""

    # recorded by axonc.numpy like the primitives, but a family of their own: their
    # samples are host-drawn graph inputs, not computations
    family = "random"
    spec: dict[str, Any] = {}

    def infer(self, types, opts, node):
        (t,) = types
        return TensorType(t.shape, _out_dtype(t.dtype))

    def affine(self, opts: dict[str, Any]) -> tuple[np.float32, np.float32]:
        """(scale, shift) taking the unit samples to the requested distribution."""
        raise NotImplementedError

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        unit = initialize(self.spec, x.shape, "f32", opts["seed"])
        scale, shift = self.affine(opts)
        out = self.unit_map(unit) * scale + shift
        return out.astype(to_numpy_dtype(_out_dtype(dtype_name(x.dtype))))

    def unit_map(self, unit: np.ndarray) -> np.ndarray:
        return unit

    def onnx(self, ctx, inputs, opts):
        b = ctx.b
        shape = ctx.in_types[0].shape
        if None in shape[1:]:
            raise GraphError(
                f"{ctx.name}: a random sample is a graph input whose only dynamic dim is the "
                f"batch, but its shape is {shape}; give the input static non-batch dims"
            )
        unit = ctx.random_input("sample", shape, self.spec, opts["seed"])
        unit = self.lower_unit_map(b, unit)
        scale, shift = self.affine(opts)
        out = b.op(
            "Add",
            [
                b.op("Mul", [unit, b.const(scale, "f32", "scale")]),
                b.const(shift, "f32", "shift"),
            ],
        )
        dtype = ctx.out_type.dtype
        return out if dtype == "f32" else b.cast(out, dtype)

    def lower_unit_map(self, b: Any, unit: str) -> str:
        return unit

    def vjp(self, ctx, inputs, output, cot, opts):
        return [None]


@register
class RandomNormal(_Random):
    """Normal samples shaped like the input: mean + std * z (Nx.random_normal)."""

    name = "random_normal"
    doc = "Samples of N(mean, std^2) shaped like the input (f32 unless the input is float)."
    spec = NORMAL
    options = {
        "mean": Option(0.0, check_float(), "the mean"),
        "std": Option(1.0, check_float(lo=0.0), "the standard deviation"),
        "seed": Option(None, _check_seed, "the stream's seed; None draws one when recorded"),
    }
    cases = [
        Case(
            "like", lambda x: make_node("random_normal", [x], {"seed": 7}), [TensorType((None, 5))]
        ),
        Case(
            "shifted",
            lambda x: make_node("random_normal", [x], {"mean": 2.0, "std": 0.5, "seed": 3}),
            [TensorType((None, 2, 3))],
        ),
    ]

    def affine(self, opts):
        return np.float32(opts["std"]), np.float32(opts["mean"])


@register
class RandomUniform(_Random):
    """Uniform samples on [min_val, max_val) shaped like the input (Nx.random_uniform)."""

    name = "random_uniform"
    doc = "Samples of U(min_val, max_val) shaped like the input (f32 unless the input is float)."
    spec = UNIFORM
    options = {
        "min_val": Option(0.0, check_float(), "the lower bound"),
        "max_val": Option(1.0, check_float(), "the upper bound"),
        "seed": Option(None, _check_seed, "the stream's seed; None draws one when recorded"),
    }
    cases = [
        Case(
            "like", lambda x: make_node("random_uniform", [x], {"seed": 5}), [TensorType((None, 4))]
        ),
        Case(
            "bounds",
            lambda x: make_node(
                "random_uniform", [x], {"min_val": -3.0, "max_val": 1.0, "seed": 2}
            ),
            [TensorType((None, 3, 2))],
        ),
    ]

    def check_options(self, opts, layer):
        if not opts["min_val"] < opts["max_val"]:
            from ..errors import OptionError

            raise OptionError(f"{layer}: min_val must be below max_val, got {opts}")
        return opts

    def unit_map(self, unit):
        return unit + np.float32(1.0)

    def lower_unit_map(self, b, unit):
        return b.op("Add", [unit, b.const(np.float32(1.0), "f32", "one")])

    def affine(self, opts):
        width = np.float32((opts["max_val"] - opts["min_val"]) / 2.0)
        return width, np.float32(opts["min_val"])


def host_samples(graph: Axon, specs: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """The host-drawn inputs of a compiled graph; the seeds of `graph`'s own random ops win.

    `specs` is the `axonc.random_inputs` metadata of the compiled graph (which may have
    been recorded with other seeds); shapes must be static.
    """
    names = assign_names(Axon(graph.output, graph.nodes))
    seeds = {
        f"{names[nid]}/sample": node.options["seed"]
        for nid, node in graph.nodes.items()
        if node.op in RANDOM_OPS
    }
    out = {}
    for name, spec in specs.items():
        shape = tuple(1 if d is None else d for d in spec["shape"])
        out[name] = initialize(spec["initializer"], shape, "f32", seeds.get(name, spec["seed"]))
    return out
