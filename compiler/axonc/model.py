"""Model functions over whole graphs: inspection, options, parameters, traversal, hooks.

These mirror Axon's model-level functions (get_output_shape, get_op_counts,
map_nodes, freeze, attach_hook, trace_forward, ...). Every function returns a
new graph where it changes one: graphs are immutable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .errors import GraphError, OptionError
from .hooks import HOOK_EVENTS
from .ir import Axon, Node, assign_names, topo_order, tree_map
from .parameters import collect_specs
from .registry import ParamSpec, get_op
from .shape_inference import declared_type, infer_types, output_types, template_types


def get_inputs(model: Axon) -> dict[str, Any]:
    """Input names mapped to their declared shapes (None for an unknown shape)."""
    return {
        model.nodes[nid].options["name"]: model.nodes[nid].options["shape"]
        for nid in topo_order(model.nodes, model.output)
        if model.nodes[nid].op == "input"
    }


def get_output_shape(model: Axon, template: Any) -> Any:
    """The output shape (or container of shapes) for the given input template."""
    types = infer_types(model, template_types(model, template))
    return tree_map(lambda t: getattr(t, "shape", t), output_types(model, types))


def get_op_counts(model: Axon) -> dict[str, int]:
    """How many nodes of each op_name the model has (inputs included, as in Axon)."""
    counts: dict[str, int] = {}
    for node in model.nodes.values():
        counts[node.kind] = counts.get(node.kind, 0) + 1
    return counts


def get_options(model: Axon) -> dict[str, Any]:
    """The output node's options."""
    return dict(model.node.options)


def set_options(model: Axon, **new_opts: Any) -> Axon:
    """A graph whose output node has these options changed (validated like the constructor)."""
    node = model.node
    spec = get_op(node.op)
    opts = spec.normalize_options({**node.options, **new_opts}, f"{node.kind} layer")
    return _replace_node(model, node.replace(options=opts))


def get_parameters(model: Axon) -> list[ParamSpec]:
    """The output node's own parameter specs (from the declared input shapes)."""
    node = model.node
    in_types = [declared_type(model, i) for i in node.inputs]
    if any(t is None for t in in_types):
        raise GraphError(f"{node.kind} layer: its input shapes are unknown; give ax.input a shape")
    return get_op(node.op).params(in_types, dict(node.options), "inference", node)


def set_parameters(model: Axon, initializers: Mapping[str, Any]) -> Axon:
    """Change the initializers of the output node's parameters: {"kernel": "zeros", ...}."""
    node = model.node
    new = {}
    for param, init in initializers.items():
        key = f"{param}_initializer"
        if key not in node.options:
            raise OptionError(
                f"{node.kind} layer has no parameter initializer {key!r}; it has "
                f"{', '.join(k for k in node.options if k.endswith('_initializer')) or 'none'}"
            )
        new[key] = init
    return set_options(model, **new)  # validates each initializer as an OptionError


def _replace_node(model: Axon, node: Node) -> Axon:
    nodes = dict(model.nodes)
    nodes[node.id] = node
    return Axon(model.output, nodes)


def map_nodes(model: Axon, fn: Callable[[Node], Node]) -> Axon:
    """A graph with `fn` applied to every node once (fn keeps ids and inputs valid)."""
    nodes = {}
    for nid in topo_order(model.nodes, model.output):
        new = fn(model.nodes[nid])
        if not isinstance(new, Node) or new.id != nid:
            raise GraphError("map_nodes: the function must return a Node with the same id")
        get_op(new.op)
        nodes[nid] = new
    out = Axon(model.output, nodes)
    topo_order(out.nodes, out.output)
    return out


def reduce_nodes(model: Axon, acc: Any, fn: Callable[[Node, Any], Any]) -> Any:
    """Fold `fn(node, acc)` over the nodes in graph order."""
    for nid in topo_order(model.nodes, model.output):
        acc = fn(model.nodes[nid], acc)
    return acc


def freeze(model: Axon, fn: Callable[[Node], bool] = lambda node: True) -> Axon:
    """Mark layers frozen (init_fn then marks their parameters frozen in the ModelState)."""
    return map_nodes(model, lambda n: n.replace(frozen=True) if fn(n) else n)


def attach_hook(
    model: Axon, fn: Callable[[Any], Any], *, on: str = "forward", mode: str = "both"
) -> Axon:
    """Call `fn` on the output layer's values at event `on` in `mode` (Axon.attach_hook).

    `on`: "initialize" (the layer's freshly initialised parameters, a dict, in any mode),
    "pre_forward" (each of the layer's inputs), "forward" (its output), "backward" (the
    gradient of the loss w.r.t. its output, when a train step or gradient is computed)
    or "all" (as Axon 0.8.1 has it: initialize, pre_forward, and forward twice; see
    spec/training.md). Hooks run in the order attached. Hooks are Python code, so a model
    with hooks predicts and trains on the reference interpreter.
    """
    if on not in HOOK_EVENTS:
        raise OptionError(f"attach_hook: on must be one of {', '.join(HOOK_EVENTS)}, got {on!r}")
    if mode not in ("both", "inference", "train"):
        raise OptionError(f"attach_hook: mode must be 'both', 'inference' or 'train', got {mode!r}")
    if not callable(fn):
        raise OptionError(f"attach_hook: the hook must be a function of one value, got {fn!r}")
    node = model.node
    return _replace_node(model, node.replace(hooks=(*node.hooks, (fn, mode, on))))


def trace_forward(model: Axon, template: Any, *, mode: str = "inference") -> list[dict[str, Any]]:
    """The flattened graph for inspection: one record per node, in execution order."""
    names = assign_names(model)
    types = infer_types(model, template_types(model, template), names)
    records = []
    for nid in topo_order(model.nodes, model.output):
        node = model.nodes[nid]
        records.append(
            {
                "name": names[nid],
                "op": node.op,
                "op_name": node.kind,
                "inputs": [names[i] for i in node.inputs],
                "options": dict(node.options),
                "output": types[nid],
                "mode": mode,
            }
        )
    return records


def trace_init(model: Axon, template: Any, *, mode: str = "inference") -> dict[str, ParamSpec]:
    """What init_fn will create for `template`: each leaf path with its spec (shape, init, kind)."""
    names = assign_names(model)
    types = infer_types(model, template_types(model, template), names)
    return {"/".join(path): spec for path, spec in collect_specs(model, types, mode, names).items()}
