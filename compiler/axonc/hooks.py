"""Which of a layer's hooks (`ax.attach_hook`) fire at an event, as Axon's compiler decides.

A hook is `(fn, mode, on)` on a node. Axon calls it at initialize (the layer's new
parameters, whatever the mode), pre_forward (each layer input), forward (the output) and
backward (the output's gradient, via a custom gradient). An "all" hook, in Axon 0.8.1's
`apply_hooks`, fires at initialize, pre_forward and forward, and once more after forward
in the backward slot (that slot wraps only `on: :backward` hooks in a custom gradient),
so it never sees a gradient; axonc does the same. An input layer's hooks see its value
(forward, then the backward slot); an input has no initialize or pre_forward step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .ir import Axon, Node

HOOK_EVENTS = ("initialize", "pre_forward", "forward", "backward", "all")


def hooks_for(node: Node, event: str, mode: str | None) -> list[Callable[[Any], Any]]:
    """The node's hooks that fire at `event` in `mode` (None: any mode, as at initialize),
    in attachment order; an "all" hook fires at initialize, pre_forward and forward."""
    on_events = (event,) if event == "backward" else (event, "all")
    return [
        fn
        for fn, hook_mode, on in node.hooks
        if on in on_events and (mode is None or hook_mode in ("both", mode))
    ]


def after_forward(node: Node, mode: str) -> list[Callable[[Any], Any]]:
    """The hooks called with a layer's output: its forward hooks, then (Axon's backward
    slot) its "all" hooks once more."""
    again = [fn for fn, hook_mode, on in node.hooks if on == "all" and hook_mode in ("both", mode)]
    return hooks_for(node, "forward", mode) + again


def runs_hooks(model: Axon, mode: str) -> bool:
    """Whether running `model` forward in `mode` calls Python hooks (so it cannot run on
    onnxruntime): its pre_forward, forward and all hooks for that mode."""
    return any(
        on in ("pre_forward", "forward", "all") and hook_mode in ("both", mode)
        for node in model.nodes.values()
        for _, hook_mode, on in node.hooks
    )
