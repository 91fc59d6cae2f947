"""Parameter trees for the optimizers: leaves paired by path, eager or traced."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import numpy as anp
from ..errors import InputError, OptionError
from ..ir import tree_map
from ..model_state import ModelState
from ..tracing import Tensor

Leaf = Any  # a numpy array or a traced Tensor


def params_of(params: Any) -> Any:
    """A ModelState's trainable parameters (as Axon hands them to Polaris); others as given.
    Gradients and updates held in a ModelState are read the same way."""
    return params.trainable_parameters() if isinstance(params, ModelState) else params


def paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths to the leaves of a nested dict/list/tuple, in tree_map's visiting order."""
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in paths(v, (*prefix, k))]
    if isinstance(tree, (list, tuple)):
        return [p for i, v in enumerate(tree) for p in paths(v, (*prefix, i))]
    return [prefix]


def fmt(path: tuple) -> str:
    return "/".join(map(str, path)) or "<root>"


def leaves_at(tree: Any, at: list[tuple], what: str) -> list[Leaf]:
    """`tree`'s leaves at the paths `at` (the params' paths): it must have the same structure."""
    own = paths(tree)
    if len(own) != len(at):
        raise InputError(
            f"{what} has {len(own)} tensors but the parameters have {len(at)}; "
            "it must mirror the parameter tree"
        )
    leaves = []
    for path in at:
        node = tree
        for key in path:
            try:
                node = node[key]
            except (KeyError, IndexError, TypeError):
                raise InputError(
                    f"{what} has no entry at {fmt(path)}; it must mirror the parameter tree"
                ) from None
        if isinstance(node, (dict, list, tuple)):
            raise InputError(f"{what} has a container at {fmt(path)} where params have a tensor")
        leaves.append(as_leaf(node))
    return leaves


def rebuild(template: Any, leaves: list[Leaf]) -> Any:
    """`leaves` in `template`'s structure (in its visiting order)."""
    it = iter(leaves)
    return tree_map(lambda _: next(it), template)


def as_leaf(x: Any) -> Leaf:
    return x if isinstance(x, Tensor) else np.asarray(x)


def traced(*groups: list[Leaf]) -> bool:
    return any(isinstance(x, Tensor) for g in groups for x in g)


def eager(leaves: list[Leaf]) -> list[Leaf]:
    """Numpy results as arrays (0-d included), traced tensors as they are."""
    return [x if isinstance(x, Tensor) else np.asarray(x) for x in leaves]


def cast(x: Leaf, dtype: Any) -> Leaf:
    """`x` as `dtype`, with no cast node when it already is."""
    return x if np.dtype(x.dtype) == np.dtype(dtype) else anp.astype(x, dtype)


def option(owner: str, key: str, value: Any, check: Callable[[Any], Any]) -> Any:
    """`check(value)`, a failure reported as an OptionError naming the owner and option."""
    try:
        return check(value)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{owner}: option {key!r}: {exc}") from None
