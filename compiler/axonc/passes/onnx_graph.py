"""A networkx view of an ONNX graph, the form onnx-stage passes work on.

Node keys are ints (the original nodes keep their order) with the NodeProto
under attribute "node"; an edge u -> v means v reads a value u produces (also
implicitly, from inside a subgraph attribute). Graph attributes: "model" (the
original ModelProto, for its opsets and metadata), "initializers" (name ->
TensorProto, in order), "inputs" / "outputs" (the graph's input and output
names, which passes never change), "producer" (value -> node), "users" (value ->
set of nodes), "names" (every name in use), "mode", "target".

Rule for passes: a value name keeps its meaning. A rewrite that computes
something else gives it a fresh name (`fresh`); a rewrite that computes the same
values by other means may produce the old name, so consumers, graph outputs and
value_info stay valid.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import networkx as nx
import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import GraphError


def _subgraphs(n: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in n.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from enclosing scopes."""
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for n in graph.node:
        used |= {i for i in n.input if i and i not in local}
        for sub in _subgraphs(n):
            used |= _outer_names(sub) - local
        local |= set(n.output)
    used |= {o.name for o in graph.output if o.name not in local}
    return used


def implicit_inputs(n: onnx.NodeProto) -> frozenset[str]:
    """Outer-scope values a node's subgraph attributes read (If/Loop/Scan bodies)."""
    out: set[str] = set()
    for sub in _subgraphs(n):
        out |= _outer_names(sub)
    return frozenset(out)


def to_nx(model: onnx.ModelProto, *, mode: str | None = None, target: str = "onnx") -> nx.DiGraph:
    """A view of `model`'s main graph (the model itself is not modified)."""
    graph = model.graph
    meta = {p.key: p.value for p in model.metadata_props}
    g = nx.DiGraph(
        model=model,
        initializers={t.name: t for t in graph.initializer},
        inputs={i.name for i in graph.input},
        outputs={o.name for o in graph.output},
        producer={},
        users={},
        names=set(),
        mode=mode or meta.get("axonc.mode", "inference"),
        target=target,
        ids=itertools.count(),
    )
    g.graph["names"] |= g.graph["initializers"].keys() | g.graph["inputs"] | g.graph["outputs"]
    for n in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        add_node(g, copy)
    return g


def from_nx(g: nx.DiGraph) -> onnx.ModelProto:
    """The viewed graph as a new ModelProto (nodes in a topological order)."""
    model = onnx.ModelProto()
    model.CopyFrom(g.graph["model"])
    graph = model.graph
    del graph.node[:]
    del graph.initializer[:]
    graph.node.extend(g.nodes[nid]["node"] for nid in nx.lexicographical_topological_sort(g))
    graph.initializer.extend(g.graph["initializers"].values())
    defined = g.graph["producer"].keys() | g.graph["initializers"].keys() | g.graph["inputs"]
    kept = [v for v in graph.value_info if v.name in defined]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return model


def verify(g: nx.DiGraph) -> None:
    """onnx.checker's full check of the viewed model, as a GraphError."""
    try:
        onnx.checker.check_model(from_nx(g), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise GraphError(f"the ONNX graph is invalid: {exc}") from None


def describe(g: nx.DiGraph) -> str:
    """The viewed model in ONNX's textual syntax (for dump-after)."""
    return onnx.printer.to_text(from_nx(g))


# ---- reading -------------------------------------------------------------------


def onnx_node(g: nx.DiGraph, nid: int) -> onnx.NodeProto:
    return g.nodes[nid]["node"]


def producer(g: nx.DiGraph, value: str) -> int | None:
    """The node producing `value`, or None for graph inputs and initializers."""
    return g.graph["producer"].get(value)


def users(g: nx.DiGraph, value: str) -> set[int]:
    """The nodes reading `value` (explicitly or from a subgraph)."""
    return g.graph["users"].get(value, set())


def pinned(g: nx.DiGraph, value: str) -> bool:
    """Whether `value` cannot be renamed away: a graph output, or read from a subgraph."""
    return value in g.graph["outputs"] or any(
        value in g.nodes[u]["implicit"] for u in users(g, value)
    )


def constant(g: nx.DiGraph, value: str) -> np.ndarray | None:
    """The value of an initializer that is not a graph input (those can be fed), else None."""
    if value in g.graph["inputs"]:
        return None
    t = g.graph["initializers"].get(value)
    return None if t is None else numpy_helper.to_array(t)


def attr(n: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in n.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def opset(g: nx.DiGraph) -> int:
    """The default-domain opset the model imports."""
    for o in g.graph["model"].opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    raise GraphError("the model imports no default-domain opset")


# ---- editing -------------------------------------------------------------------


def fresh(g: nx.DiGraph, hint: str) -> str:
    """A value or node name not used anywhere in the graph yet."""
    names = g.graph["names"]
    name, n = hint, 0
    while name in names:
        n += 1
        name = f"{hint}_{n}"
    names.add(name)
    return name


def _link(g: nx.DiGraph, nid: int) -> None:
    """(Re)draw `nid`'s in-edges and its entries in the users map from its inputs."""
    n = g.nodes[nid]["node"]
    reads = {i for i in n.input if i} | g.nodes[nid]["implicit"]
    for u in list(g.predecessors(nid)):
        g.remove_edge(u, nid)
    for value in reads:
        g.graph["users"].setdefault(value, set()).add(nid)
        p = g.graph["producer"].get(value)
        if p is not None:
            g.add_edge(p, nid)


def _unlink(g: nx.DiGraph, nid: int) -> None:
    n = g.nodes[nid]["node"]
    for value in {i for i in n.input if i} | g.nodes[nid]["implicit"]:
        readers = g.graph["users"].get(value)
        if readers is not None:
            readers.discard(nid)
            if not readers:
                del g.graph["users"][value]


def add_node(g: nx.DiGraph, n: onnx.NodeProto) -> int:
    """Add a node (it must produce names no other node produces); returns its id."""
    nid = next(g.graph["ids"])
    g.add_node(nid, node=n, implicit=implicit_inputs(n))
    g.graph["names"].add(n.name)
    for out in n.output:
        if not out:
            continue
        if out in g.graph["producer"]:
            raise GraphError(f"ONNX value {out!r} is produced twice")
        g.graph["producer"][out] = nid
        g.graph["names"].add(out)
        for u in users(g, out):
            g.add_edge(nid, u)
    _link(g, nid)
    return nid


def make_node(
    g: nx.DiGraph,
    op_type: str,
    inputs: Iterable[str],
    outputs: Iterable[str],
    name_hint: str,
    **attrs: object,
) -> int:
    """Build and add a default-domain node named after `name_hint`; returns its id."""
    n = onnx.helper.make_node(
        op_type, list(inputs), list(outputs), name=fresh(g, name_hint), **attrs
    )
    return add_node(g, n)


def remove_node(g: nx.DiGraph, nid: int) -> None:
    """Remove a node; whatever still reads its outputs is the caller's to rewire."""
    _unlink(g, nid)
    for out in g.nodes[nid]["node"].output:
        if g.graph["producer"].get(out) == nid:
            del g.graph["producer"][out]
    g.remove_node(nid)


def set_inputs(g: nx.DiGraph, nid: int, inputs: Iterable[str]) -> None:
    """Replace a node's input list."""
    _unlink(g, nid)
    n = g.nodes[nid]["node"]
    del n.input[:]
    n.input.extend(inputs)
    _link(g, nid)


def replace_uses(g: nx.DiGraph, old: str, new: str) -> bool:
    """Make every node read `new` instead of `old`; False (and no change) if `old` is pinned."""
    if pinned(g, old):
        return False
    for nid in list(users(g, old)):
        n = g.nodes[nid]["node"]
        set_inputs(g, nid, [new if i == old else i for i in n.input])
    return True


def add_initializer(g: nx.DiGraph, name: str, value: np.ndarray) -> str:
    """Store `value` as an initializer under `name` (a name nothing else defines)."""
    g.graph["names"].add(name)
    g.graph["initializers"][name] = numpy_helper.from_array(np.array(value, order="C"), name)
    return name


def rename_output(g: nx.DiGraph, nid: int, old: str, new: str) -> None:
    """Make node `nid` produce `new` instead of `old` (nothing may read `old` any more,
    and no other node may produce `new`)."""
    if users(g, old):
        raise GraphError(f"cannot rename {old!r}: it is still read")
    if g.graph["producer"].get(new, nid) != nid:
        raise GraphError(f"cannot rename {old!r} to {new!r}: another node produces it")
    n = g.nodes[nid]["node"]
    outs = [new if o == old else o for o in n.output]
    del n.output[:]
    n.output.extend(outs)
    del g.graph["producer"][old]
    g.graph["producer"][new] = nid
    g.graph["names"].add(new)
    for u in users(g, new):
        g.add_edge(nid, u)
