"""Choosing onnxruntime execution providers: the fastest one present, CPU as the fallback.

`choose_providers` is a pure function of the providers a build offers and the
ones a caller asked for, so the policy is testable on a CPU-only machine.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ProviderError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# Used when the caller names none, best first, and only those the build offers.
PREFERENCE = (TENSORRT, CUDA, CPU)

ALIASES = {"cpu": CPU, "cuda": CUDA, "gpu": CUDA, "tensorrt": TENSORRT, "trt": TENSORRT}


def _canonical(name: str, available: Sequence[str]) -> str:
    if name in available:
        return name
    by_lower = {a.lower(): a for a in available}
    full = ALIASES.get(name.lower(), by_lower.get(name.lower(), name))
    return by_lower.get(full.lower(), full)


def choose_providers(
    available: Sequence[str], requested: str | Sequence[str] | None = None
) -> list[str]:
    """The provider list to open a session with.

    With `requested` None: TensorRT, then CUDA, then CPU, keeping those in `available`
    (onnxruntime-gpu offers the first two). Otherwise the requested providers in the
    given order; each is a full name ("CUDAExecutionProvider") or a short alias
    ("cpu", "cuda", "tensorrt"). A provider not in `available` raises ProviderError
    listing the available ones.
    """
    available = list(available)
    if requested is None:
        chosen = [p for p in PREFERENCE if p in available]
        if not chosen:
            raise ProviderError(
                "none of the supported execution providers (TensorRT, CUDA, CPU) is available; "
                f"this onnxruntime offers: {', '.join(available) or 'nothing'}"
            )
        return chosen
    names = [requested] if isinstance(requested, str) else list(requested)
    if not names:
        raise ProviderError(
            f"providers is empty; choose from: {', '.join(available)} (or leave it out)"
        )
    chosen = []
    for name in names:
        if not isinstance(name, str):
            raise ProviderError(f"a provider is a name such as 'cpu' or 'cuda', got {name!r}")
        full = _canonical(name, available)
        if full not in available:
            raise ProviderError(
                f"execution provider {name!r} is not available; available: {', '.join(available)}"
            )
        if full not in chosen:
            chosen.append(full)
    return chosen


__all__ = ["ALIASES", "CPU", "CUDA", "PREFERENCE", "TENSORRT", "choose_providers"]
