"""The reference interpreter: runs a graph with each op's numpy `forward` rule.

It is the executable definition of axonc's semantics: backends are checked
against it. It is mode-aware (`inference` / `train`): in train mode layers that
own state (batch-norm statistics, dropout keys) return updated values, which
`run` collects into a nested `{layer: {name: array}}` map.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError, StateError
from .hooks import after_forward, hooks_for
from .ir import Axon, Node, assign_names, topo_order, tree_map
from .registry import get_op
from .shape_inference import NONE

MODES = ("inference", "train")


class Context:
    """What a forward rule may use besides its inputs and parameters."""

    def __init__(self, runner: _Runner, node: Node, name: str):
        self._runner = runner
        self.node = node
        self.name = name
        self.mode = runner.mode
        self.root = runner.root
        self.new_state: dict[str, Any] = {}

    def set_state(self, key: str, value: Any) -> None:
        """Report the updated value of one of this layer's state tensors (train mode)."""
        self.new_state[key] = value

    def run(self, body: Axon, args: list[Any], params: Mapping[str, Any] | None = None) -> Any:
        """Run a subgraph (a traced body or a block) on concrete arguments."""
        out, state = run(body, {}, params or {}, self.mode, args=args, root=self.root)
        if state:
            self.new_state.update(state)
        return out


class _Runner:
    def __init__(self, mode: str, root: Mapping[str, Any]):
        self.mode = mode
        self.root = root  # the whole parameter/state map (subgraphs see a scoped one)


def run(
    model: Axon,
    inputs: Mapping[str, Any],
    params: Mapping[str, Any],
    mode: str = "inference",
    *,
    args: list[Any] | None = None,
    names: Mapping[int, str] | None = None,
    root: Mapping[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Evaluate `model` on concrete inputs; returns (outputs, updated state by layer).

    `inputs` maps input names to arrays; `params` is the nested parameter/state map
    keyed by layer name; `args` binds a subgraph's argument nodes by position.
    """
    if mode not in MODES:
        raise InputError(f"mode must be 'inference' or 'train', got {mode!r}")
    names = names if names is not None else assign_names(model)
    runner = _Runner(mode, params if root is None else root)
    values: dict[int, Any] = {}
    new_state: dict[str, Any] = {}
    for nid in topo_order(model.nodes, model.output):
        node = model.nodes[nid]
        if node.op == "input":
            values[nid] = _input_value(node, inputs)
            for hook in after_forward(node, mode) if node.hooks else ():
                hook(values[nid])  # Axon hooks an input's value (forward and backward slots)
            continue
        if node.op == "argument":
            values[nid] = args[node.options["index"]] if args is not None else NONE
            continue
        spec = get_op(node.op)
        in_values = [values[i] for i in node.inputs]
        if not spec.accepts_none and any(v is NONE for v in in_values):
            values[nid] = NONE
            continue
        ctx = Context(runner, node, names[nid])
        layer_params = params.get(names[nid], {}) if isinstance(params, Mapping) else {}
        if node.hooks:
            for value in in_values:
                for hook in hooks_for(node, "pre_forward", mode):
                    hook(value)
        out = spec.forward(ctx, in_values, layer_params, dict(node.options))
        if node.hooks:
            for hook in after_forward(node, mode):
                hook(out)
        values[nid] = out
        if ctx.new_state:
            layer_state = new_state.setdefault(names[nid], {})
            _deep_update(layer_state, ctx.new_state)
    return tree_map(lambda i: values[i], model.output), new_state


def layer_param(params: Mapping[str, Any], key: str, ctx: Context) -> Any:
    """A layer's parameter by key, or a StateError saying how to provide it."""
    try:
        return params[key]
    except (KeyError, TypeError):
        raise StateError(
            f"layer {ctx.name!r} ({ctx.node.kind}) has no value for {key!r}; "
            "initialise the model state with init_fn or pass the parameter in"
        ) from None


def _input_value(node: Node, inputs: Mapping[str, Any]) -> Any:
    name = node.options["name"]
    if name not in inputs or inputs[name] is None or inputs[name] is NONE:
        if node.options["optional"]:
            return NONE
        raise InputError(f"input {name!r} is required but was not given")
    return np.asarray(inputs[name])


def _deep_update(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            _deep_update(into[k], v)
        else:
            into[k] = v
