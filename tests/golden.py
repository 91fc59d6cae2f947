"""Reading the real-Axon golden files in tests/fixtures/axon-golden (see its README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN_DIR = Path(__file__).parent / "fixtures" / "axon-golden"

_DTYPES = {
    "f32": np.float32,
    "f64": np.float64,
    "s32": np.int32,
    "s64": np.int64,
    "u32": np.uint32,
    "u64": np.uint64,
    "u8": np.uint8,
}


def is_tensor(obj: Any) -> bool:
    return isinstance(obj, dict) and set(obj) == {"shape", "dtype", "data"}


def tensor(obj: dict[str, Any]) -> np.ndarray:
    """A golden tensor: floats parsed as float64 then cast, so the f32 value is exact."""
    data = [float(v) if isinstance(v, str) else v for v in obj["data"]]
    dtype = _DTYPES[obj["dtype"]]
    wide = np.float64 if np.dtype(dtype).kind == "f" else np.int64
    return np.asarray(data, dtype=wide).astype(dtype).reshape(obj["shape"])


def tree(obj: Any) -> Any:
    """Every tensor in a nested JSON structure as a numpy array (lists stay lists)."""
    if is_tensor(obj):
        return tensor(obj)
    if isinstance(obj, dict):
        return {k: tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [tree(v) for v in obj]
    return obj


def load(case: str) -> dict[str, Any]:
    """A golden case by name (the file name without .json)."""
    return json.loads((GOLDEN_DIR / f"{case}.json").read_text())


def case_names(prefixes: str | tuple[str, ...] = "") -> list[str]:
    """The golden case names, sorted; only those starting with one of `prefixes` if given."""
    return sorted(p.stem for p in GOLDEN_DIR.glob("*.json") if p.stem.startswith(prefixes))


def inputs(case: dict[str, Any]) -> dict[str, np.ndarray]:
    return {name: tensor(t) for name, t in case["inputs"].items()}


def io(name: str) -> tuple[dict[str, np.ndarray], Any]:
    """A case's inputs by name and its expected outputs, as arrays."""
    case = load(name)
    return inputs(case), tree(case["outputs"])


def assert_tree_close(actual: Any, expected: Any, rtol: float, atol: float, path: str = "") -> None:
    """Compare a result (tuples/lists/dicts of arrays) with a golden tree, naming the leaf."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected a dict, got {type(actual).__name__}"
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for k in expected:
            assert_tree_close(actual[k], expected[k], rtol, atol, f"{path}/{k}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), f"{path}: expected a sequence, got {type(actual)}"
        assert len(actual) == len(expected), (
            f"{path}: {len(actual)} elements, expected {len(expected)}"
        )
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_tree_close(a, e, rtol, atol, f"{path}[{i}]")
    else:
        a = np.asarray(actual)
        assert a.shape == expected.shape, f"{path}: shape {a.shape}, expected {expected.shape}"
        assert a.dtype == expected.dtype, f"{path}: dtype {a.dtype}, expected {expected.dtype}"
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(a, expected, rtol=rtol, atol=atol, err_msg=path)
        else:
            np.testing.assert_array_equal(a, expected, err_msg=path)
