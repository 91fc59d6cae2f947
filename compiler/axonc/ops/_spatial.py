"""Shared rules of spatial layers (conv, pooling, resize): channels, padding, windows.

Axon is channels-last by default; `channels="first"` puts channels at axis 1.
Padding follows Nx: "valid", "same" (lo = floor((k_eff-1)/2), hi = ceil((k_eff-1)/2)
with k_eff = (k-1)*dilation+1, independent of stride and input size) or an
explicit list of (lo, hi) pairs, one per spatial dim.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import check_choice

check_channels = check_choice("first", "last")


def int_pairs(v: Any) -> tuple[tuple[int, int], ...] | None:
    """`v` as a tuple of (lo, hi) int pairs, or None if it is not a list/tuple of such pairs."""
    if not isinstance(v, (list, tuple)):
        return None
    pairs = []
    for p in v:
        if (
            not isinstance(p, (list, tuple))
            or len(p) != 2
            or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in p)
        ):
            return None
        pairs.append((int(p[0]), int(p[1])))
    return tuple(pairs)


def check_padding(v: Any) -> str | tuple[tuple[int, int], ...]:
    """'valid', 'same', or a list of (lo, hi) int pairs, one per spatial dim."""
    if v in ("valid", "same"):
        return v
    pairs = int_pairs(v)
    if not pairs:
        raise ValueError(f"expected 'valid', 'same' or a list of (lo, hi) pairs, got {v!r}")
    return pairs


def spatial_axes(rank: int, channels: str) -> list[int]:
    """The spatial axes of a (batch, ..., channels) or (batch, channels, ...) tensor."""
    return list(range(2, rank)) if channels == "first" else list(range(1, rank - 1))


def channel_axis(rank: int, channels: str) -> int:
    return 1 if channels == "first" else rank - 1


def per_dim(value: int | tuple[int, ...], n: int, what: str) -> tuple[int, ...]:
    """Broadcast an int option to n spatial dims, or check a per-dim tuple's length."""
    if isinstance(value, tuple):
        if len(value) != n:
            raise ValueError(f"{what} has {len(value)} entries but the input has {n} spatial dims")
        return value
    return (value,) * n


def same_padding(kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Nx's :same padding: depends only on the effective kernel size."""
    pads = []
    for k, d in zip(kernel, dilation):
        total = (k - 1) * d
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def resolve_padding(
    padding: str | tuple[tuple[int, int], ...],
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
) -> tuple[tuple[int, int], ...]:
    """Explicit (lo, hi) pads for each spatial dim."""
    n = len(kernel)
    if padding == "valid":
        return ((0, 0),) * n
    if padding == "same":
        return same_padding(kernel, dilation)
    if len(padding) != n:
        raise ValueError(f"padding has {len(padding)} pairs but the input has {n} spatial dims")
    return tuple(padding)


def window_out(
    size: int | None, k: int, stride: int, lo: int, hi: int, dilation: int = 1
) -> int | None:
    """Output length of a strided window over a padded dim (None stays dynamic)."""
    if size is None:
        return None
    k_eff = (k - 1) * dilation + 1
    return max((size + lo + hi - k_eff) // stride + 1, 0)
