"""ModelState: a model's parameters and state as one immutable value, after Axon.ModelState.

`data` is a nested dict `{layer: {param: array}}` (deeper for recurrent gate maps and
blocks: `{"lstm_0": {"input_kernel": {"wii": array}}}`). Every leaf has an access path, a
tuple of strings such as `("batch_norm_0", "mean")`, and is either a trainable
*parameter* or *state* (batch-norm running statistics, dropout keys). Leaves may be
*frozen* (excluded from training) and a leaf may be *tied* to another (weight sharing).

Every method returns a new ModelState: the nested dicts are copied on write, the arrays
are shared, never copied, so an update is cheap and old states stay valid.

Decisions, where Axon 0.8.1 is silent or loose:

- `freeze(mask)` adds to the frozen set; Axon replaces the set on each call except
  when the mask matches nothing, which looks unintended, so freezes accumulate here
  and `unfreeze(mask)` removes.
- `merge(other, fun)` keeps the structure of `self` (as Axon does): leaves only in
  `other` are dropped, leaves in both become `fun(path, self_leaf, other_leaf)`
  (Axon passes only the last key; here the whole path), `other`'s leaf by default.
- `tie(dest, source, transform)` stores the tie as data: `ties[dest] = (source,
  transform_name)` with the transform one of TRANSFORMS ("identity", "transpose" =
  reverse all axes, as Nx.transpose/1). Reading `data` or `flatten()` at `dest` gives
  the transformed source; a tied destination is neither a trainable nor a frozen
  parameter (it has no storage of its own), and updating it is a StateError: update
  the source.
- `update` raises StateError for a path the state does not hold (Axon ignores it);
  like Axon it writes the given parameters, frozen or not, and only the non-frozen
  state leaves of `updated_state`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import StateError

Path = tuple[str, ...]
Tree = dict[str, Any]
PathsLike = Iterable[Any] | Mapping[str, Any] | None

TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda a: a,
    "transpose": np.transpose,
}
SEPARATOR = "/"


def _fmt(path: Iterable[str]) -> str:
    return SEPARATOR.join(path)


def _as_path(path: Any) -> Path:
    """A path given as a tuple/list of str or as a "layer/param" string."""
    if isinstance(path, str):
        parts = tuple(path.split(SEPARATOR))
    elif isinstance(path, (tuple, list)):
        parts = tuple(path)
    else:
        raise StateError(f"expected a path (a tuple of str or 'layer/param'), got {path!r}")
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise StateError(f"expected a path of non-empty strings, got {path!r}")
    return parts


def _is_tree(x: Any) -> bool:
    return isinstance(x, Mapping)


def _leaves(tree: Mapping[str, Any], prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    for key, value in tree.items():
        if _is_tree(value):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _lookup(tree: Mapping[str, Any], path: Path) -> Any:
    """The subtree or leaf at `path`, or a StateError naming the path."""
    node: Any = tree
    for i, key in enumerate(path):
        if not _is_tree(node) or key not in node:
            where = f" (no {key!r} under {_fmt(path[:i])!r})" if i else ""
            raise StateError(f"no parameter or state at path {_fmt(path)!r}{where}")
        node = node[key]
    return node


def _assoc(tree: Mapping[str, Any], path: Path, value: Any) -> Tree:
    """A copy of `tree` with `value` at `path`; only the dicts along the path are copied."""
    out = dict(tree)
    head, rest = path[0], path[1:]
    if not rest:
        out[head] = value
        return out
    child = tree.get(head, {})
    if not _is_tree(child):
        raise StateError(f"{head!r} is a tensor, it has no entry {_fmt(rest)!r}")
    out[head] = _assoc(child, rest, value)
    return out


def _dissoc(tree: Mapping[str, Any], path: Path) -> Tree:
    """A copy of `tree` without the leaf at `path`, pruning dicts left empty."""
    out = dict(tree)
    head, rest = path[0], path[1:]
    if not rest:
        out.pop(head, None)
        return out
    child = _dissoc(tree[head], rest)
    if child:
        out[head] = child
    else:
        del out[head]
    return out


def _build(pairs: Iterable[tuple[Path, Any]]) -> Tree:
    """A nested dict from (path, leaf) pairs."""
    out: Tree = {}
    for path, value in pairs:
        node = out
        for i, key in enumerate(path[:-1]):
            node = node.setdefault(key, {})
            if not _is_tree(node):
                raise StateError(
                    f"path {_fmt(path)!r} passes through the tensor at {_fmt(path[: i + 1])!r}"
                )
        if path[-1] in node:
            raise StateError(f"path {_fmt(path)!r} is given twice or is both a tensor and a map")
        node[path[-1]] = value
    return out


def _normalise_data(data: Mapping[str, Any], dtype: Any = None) -> Tree:
    """Checks keys, turns leaves into numpy arrays (no copy when already arrays)."""
    if not _is_tree(data):
        raise StateError(f"expected a nested dict {{layer: {{param: array}}}}, got {type(data)}")
    out: Tree = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise StateError(f"keys of model state data must be non-empty strings, got {key!r}")
        if _is_tree(value):
            out[key] = _normalise_data(value, dtype)
            continue
        array = np.asarray(value, dtype=dtype)
        if array.dtype.kind not in "biuf":
            raise StateError(
                f"entry {key!r} must be a numeric tensor, got {type(value).__name__} "
                f"of dtype {array.dtype}"
            )
        out[key] = array
    return out


def _paths(spec: PathsLike) -> set[Path]:
    """Paths given as an iterable of paths, or in Axon's nested form {"bn": ["mean", "var"]}."""
    if spec is None:
        return set()
    if isinstance(spec, str):
        raise StateError(f"expected a collection of paths, got the single string {spec!r}")
    if _is_tree(spec):
        out: set[Path] = set()
        for key, value in spec.items():
            if _is_tree(value):
                out |= {(key, *p) for p in _paths(value)}
            elif isinstance(value, (list, tuple, set, frozenset)):
                out |= {(key, *_as_path(v)) for v in value}
            else:
                raise StateError(f"expected a list of names under {key!r}, got {value!r}")
        return out
    return {_as_path(p) for p in spec}


def _helpful_size(n: int) -> str:
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= factor:
            return f"{n / factor:.2f} {unit}"
    return f"{n} B"


def _info(tree: Mapping[str, Any]) -> tuple[int, int]:
    arrays = [a for _, a in _leaves(tree)]
    return sum(int(a.size) for a in arrays), sum(int(a.nbytes) for a in arrays)


class ModelState:
    """Parameters and state of a model, with frozen masks and ties (Axon.ModelState).

    Construct with `ModelState(data, parameters=..., state=..., frozen=..., ties=...)`:
    `data` is the nested dict of tensors; `parameters` and `state` say which leaves are
    which, as iterables of paths (tuples of str or "layer/param" strings) or in Axon's
    nested form `{"batch_norm_0": ["mean", "var"]}`. Leave `parameters` out and every leaf
    not in `state` is a parameter; give both and every leaf must be in exactly one.
    `frozen` lists frozen leaves (parameters or state); `ties` maps a destination path to
    `(source_path, transform_name)`. `ModelState.new(data)` is the all-parameters case.
    """

    __slots__ = ("_data", "frozen", "parameters", "state", "ties")
    _data: Tree
    parameters: frozenset[Path]
    state: frozenset[Path]
    frozen: frozenset[Path]
    ties: Mapping[Path, tuple[Path, str]]

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        parameters: PathsLike = None,
        state: PathsLike = None,
        frozen: PathsLike = None,
        ties: Mapping[Any, tuple[Any, str]] | None = None,
    ) -> None:
        raw = _normalise_data(data or {})
        tie_map: dict[Path, tuple[Path, str]] = {}
        for dest, (source, transform) in (ties or {}).items():
            tie_map[_as_path(dest)] = (_as_path(source), _check_transform(transform))
        # a tied destination has no storage of its own: drop any tensor given for it
        for dest in tie_map:
            if _lookup_leaf(raw, dest) is not None:
                raw = _dissoc(raw, dest)
        leaves = {p for p, _ in _leaves(raw)}
        known = leaves | set(tie_map)
        state_paths = _paths(state)
        param_paths = (leaves - state_paths) if parameters is None else _paths(parameters)
        for kind, paths in (("parameter", param_paths), ("state", state_paths)):
            missing = sorted(paths - known)
            if missing:
                raise StateError(f"{kind} path {_fmt(missing[0])!r} is not in the model state data")
        both = sorted(param_paths & state_paths)
        if both:
            raise StateError(f"path {_fmt(both[0])!r} is listed as both a parameter and state")
        unclassified = sorted(leaves - param_paths - state_paths)
        if unclassified:
            raise StateError(
                f"leaf {_fmt(unclassified[0])!r} is neither a parameter nor state; "
                "list it in `parameters` or `state`"
            )
        frozen_paths = _paths(frozen)
        missing = sorted(frozen_paths - leaves)
        if missing:
            raise StateError(f"frozen path {_fmt(missing[0])!r} is not in the model state data")
        for dest, (source, transform) in tie_map.items():
            _check_tie(raw, tie_map, dest, source, transform)
        setattr_ = object.__setattr__
        setattr_(self, "_data", raw)
        setattr_(self, "parameters", frozenset(param_paths))
        setattr_(self, "state", frozenset(state_paths))
        setattr_(self, "frozen", frozenset(frozen_paths))
        setattr_(self, "ties", MappingProxyType(tie_map))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"ModelState is immutable; its methods return a new one ({name})")

    # ---- construction -------------------------------------------------------------

    @classmethod
    def empty(cls) -> ModelState:
        """A model state with no parameters (what `init_fn` starts from)."""
        return cls({})

    @classmethod
    def new(cls, data: Mapping[str, Any] | ModelState) -> ModelState:
        """A model state whose every leaf is a trainable parameter; a ModelState passes through."""
        if isinstance(data, ModelState):
            return data
        return cls(data)

    @classmethod
    def from_nested(
        cls, nested: Mapping[str, Any], *, state: PathsLike = None, dtype: Any = None
    ) -> ModelState:
        """A model state from a nested dict of array-likes (lists, scalars, arrays).

        Leaves are converted with numpy (cast to `dtype` when given); `state` lists the state
        leaves (e.g. a golden file's `{"batch_norm_0": ["mean", "var"]}`), the rest are
        parameters.
        """
        return cls(_normalise_data(nested, dtype), state=state)

    @classmethod
    def unflatten(
        cls,
        flat: Mapping[str, Any],
        *,
        parameters: PathsLike = None,
        state: PathsLike = None,
        frozen: PathsLike = None,
        ties: Mapping[Any, tuple[Any, str]] | None = None,
    ) -> ModelState:
        """The inverse of `flatten`: keys "layer/param[/sub]" -> tensors, plus the metadata.

        Entries for tied destinations, if present, are ignored (they are derived).
        """
        tree = _build((_as_path(key), value) for key, value in flat.items())
        return cls(tree, parameters=parameters, state=state, frozen=frozen, ties=ties)

    def _replace(self, **changes: Any) -> ModelState:
        fields = {
            "data": self._data,
            "parameters": self.parameters,
            "state": self.state,
            "frozen": self.frozen,
            "ties": self.ties,
        }
        fields.update(changes)
        return ModelState(**fields)

    # ---- reading ------------------------------------------------------------------

    @property
    def data(self) -> Tree:
        """The nested dict of tensors, ties resolved (a fresh dict; the arrays are shared)."""
        tree = _copy_tree(self._data)
        for dest in sorted(self.ties):
            tree = _assoc(tree, dest, self.get(dest))
        return tree

    def get(self, path: Any) -> np.ndarray:
        """The tensor at `path` (a tied destination gives its transformed source)."""
        path = _as_path(path)
        if path in self.ties:
            source, transform = self.ties[path]
            return TRANSFORMS[transform](_lookup(self._data, source))
        leaf = _lookup(self._data, path)
        if _is_tree(leaf):
            raise StateError(f"path {_fmt(path)!r} is a map of tensors, not a tensor")
        return leaf

    def paths(self) -> list[Path]:
        """Every leaf path, tied destinations included, sorted."""
        return sorted({p for p, _ in _leaves(self._data)} | set(self.ties))

    def flatten(self, *, include_tied: bool = True) -> dict[str, np.ndarray]:
        """A flat dict "layer/param[/sub]" -> tensor, sorted by path (for the file format).

        Tied destinations appear with their transformed source unless `include_tied` is
        false (a file stores only the sources plus `ties`).
        """
        paths = self.paths() if include_tied else sorted(p for p, _ in _leaves(self._data))
        out: dict[str, np.ndarray] = {}
        for path in paths:
            bad = [key for key in path if SEPARATOR in key]
            if bad:
                raise StateError(
                    f"cannot flatten path {list(path)!r}: key {bad[0]!r} contains {SEPARATOR!r}"
                )
            out[_fmt(path)] = self.get(path)
        return out

    def _select(self, paths: Iterable[Path]) -> Tree:
        return _build((p, _lookup(self._data, p)) for p in sorted(paths) if p not in self.ties)

    def trainable_parameters(self) -> Tree:
        """Parameters that are not frozen, as a nested dict (tied destinations excluded)."""
        return self._select(self.parameters - self.frozen)

    def frozen_parameters(self) -> Tree:
        """Frozen parameters, as a nested dict."""
        return self._select(self.frozen - self.state)

    def trainable_state(self) -> Tree:
        """State that is not frozen (updated in train mode), as a nested dict."""
        return self._select(self.state - self.frozen)

    def frozen_state(self) -> Tree:
        """Frozen state (kept as is even in train mode), as a nested dict."""
        return self._select(self.frozen - self.parameters)

    # ---- new states ---------------------------------------------------------------

    def freeze(self, mask: Callable[[list[str]], bool] = lambda path: True) -> ModelState:
        """Freezes every leaf whose access path (a list of str) `mask` accepts; adds to frozen."""
        return self._replace(frozen=self.frozen | self._masked(mask))

    def unfreeze(self, mask: Callable[[list[str]], bool] = lambda path: True) -> ModelState:
        """Unfreezes every leaf whose access path (a list of str) `mask` accepts."""
        return self._replace(frozen=self.frozen - self._masked(mask))

    def _masked(self, mask: Callable[[list[str]], bool]) -> set[Path]:
        if not callable(mask):
            raise StateError(f"mask must be a function of a path (list of str), got {mask!r}")
        return {p for p, _ in _leaves(self._data) if mask(list(p))}

    def merge(
        self,
        other: ModelState | Mapping[str, Any],
        fun: Callable[[list[str], np.ndarray, np.ndarray], Any] | None = None,
    ) -> ModelState:
        """Combines the leaves of `self` with those of `other` at the same paths.

        The result keeps `self`'s structure and metadata: paths only in `other` are dropped,
        tied destinations of `self` stay tied, and a leaf in both becomes
        `fun(path, self_leaf, other_leaf)` (`other`'s leaf when `fun` is None).
        """
        rhs = other.data if isinstance(other, ModelState) else _normalise_data(other)
        data = self._data
        for path, lhs_leaf in sorted(_leaves(self._data)):
            try:
                rhs_leaf = _lookup(rhs, path)
            except StateError:
                continue
            if _is_tree(rhs_leaf):
                raise StateError(
                    f"cannot merge at {_fmt(path)!r}: a tensor on the left, a map on the right"
                )
            value = rhs_leaf if fun is None else fun(list(path), lhs_leaf, rhs_leaf)
            data = _assoc(data, path, value)
        return self._replace(data=data)

    def tie(self, destination: Any, source: Any, transform: str | None = None) -> ModelState:
        """Shares `source`'s tensor at `destination`, optionally transformed (by name).

        `transform` is one of TRANSFORMS ("identity", the default, or "transpose": all axes
        reversed, for tying an embedding to an output projection). An existing tensor at
        `destination` is replaced and must have the transformed source's shape.
        """
        dest, src = _as_path(destination), _as_path(source)
        name = _check_transform("identity" if transform is None else transform)
        ties = dict(self.ties)
        ties[dest] = (src, name)
        _check_tie(self._data, ties, dest, src, name)
        return self._replace(
            data=_dissoc_if_present(self._data, dest), ties=ties, frozen=self.frozen - {dest}
        )

    def update(
        self,
        updated_parameters: Mapping[str, Any],
        updated_state: Mapping[str, Any] | None = None,
    ) -> ModelState:
        """A new state with the given leaves replaced (Axon.ModelState.update).

        Every leaf of `updated_parameters` is written (frozen or not); of `updated_state`,
        only non-frozen state leaves are written. A path the state does not hold, or a
        tied destination, is a StateError.
        """
        writable_state = self.state - self.frozen
        data = self._data
        for tree, only in ((updated_parameters, None), (updated_state or {}, writable_state)):
            for path, value in _leaves(_normalise_data(tree)):
                if path in self.ties:
                    source = self.ties[path][0]
                    raise StateError(
                        f"{_fmt(path)!r} is tied to {_fmt(source)!r}; update the source instead"
                    )
                leaf = _lookup(self._data, path)
                if _is_tree(leaf):
                    raise StateError(f"path {_fmt(path)!r} is a map of tensors, not a tensor")
                if only is None or path in only:
                    data = _assoc(data, path, value)
        return self._replace(data=data)

    # ---- display ------------------------------------------------------------------

    def __repr__(self) -> str:
        total = _info(self._data)
        params = _info(self.trainable_parameters())
        state = _info(self.trainable_state())
        lines = [
            f"Parameters: {total[0]} ({_helpful_size(total[1])})",
            f"Trainable Parameters: {params[0]} ({_helpful_size(params[1])})",
            f"Trainable State: {state[0]} ({_helpful_size(state[1])})",
        ]
        if self.ties:
            lines.append(f"Tied: {len(self.ties)}")
        return "ModelState<\n" + "".join(f"  {line}\n" for line in lines) + ">"


def _copy_tree(tree: Mapping[str, Any]) -> Tree:
    return {k: _copy_tree(v) if _is_tree(v) else v for k, v in tree.items()}


def _lookup_leaf(tree: Mapping[str, Any], path: Path) -> Any:
    """The leaf at `path`, or None when there is none (a map there is a StateError)."""
    try:
        node = _lookup(tree, path)
    except StateError:
        return None
    if _is_tree(node):
        raise StateError(f"cannot tie at {_fmt(path)!r}: it is a map of tensors, not a tensor")
    return node


def _dissoc_if_present(tree: Tree, path: Path) -> Tree:
    return tree if _lookup_leaf(tree, path) is None else _dissoc(tree, path)


def _check_transform(name: Any) -> str:
    if name not in TRANSFORMS:
        raise StateError(f"unknown tie transform {name!r}; expected one of {', '.join(TRANSFORMS)}")
    return name


def _check_tie(
    raw: Tree, ties: Mapping[Path, tuple[Path, str]], dest: Path, src: Path, transform: str
) -> None:
    """A tie's source must be a stored tensor (not itself tied) and fit the destination."""
    if dest == src:
        raise StateError(f"cannot tie {_fmt(dest)!r} to itself")
    users = sorted(d for d, (s, _) in ties.items() if s == dest)
    if users:
        raise StateError(f"cannot tie {_fmt(dest)!r}: {_fmt(users[0])!r} is already tied to it")
    if src in ties:
        raise StateError(
            f"cannot tie {_fmt(dest)!r} to {_fmt(src)!r}: the source is itself tied "
            f"to {_fmt(ties[src][0])!r}; tie to that instead"
        )
    try:
        source = _lookup(raw, src)
    except StateError as err:
        raise StateError(f"cannot tie {_fmt(dest)!r} to {_fmt(src)!r}: {err}") from None
    if _is_tree(source):
        raise StateError(f"cannot tie to {_fmt(src)!r}: it is a map of tensors, not a tensor")
    existing = _lookup_leaf(raw, dest)
    shape = TRANSFORMS[transform](source).shape
    if existing is not None and existing.shape != shape:
        raise StateError(
            f"cannot tie {_fmt(dest)!r} (shape {existing.shape}) to {_fmt(src)!r} with "
            f"transform {transform!r}: that gives shape {shape}"
        )
