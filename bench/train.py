"""Training speed: axonc's compiled train step vs PyTorch eager, on CPU.

Each configuration (model, batch, optimizer) is built twice with the same initial
weights:

  axonc  ax.train.compile_step(model, "categorical_cross_entropy", optimizer),
         the model ending in a softmax; step(train_state, x, y) with a one-hot y
  torch  the same layers without the softmax, nn.CrossEntropyLoss on the logits
         (class-index targets), zero_grad / forward / backward / optimizer.step()
         in eager mode; torch.set_num_threads(2)

axonc's categorical_cross_entropy on a softmax output takes the from-logits path
(log_softmax of the softmax's input), so both compute the same loss. Optimizers:
sgd(0.01, momentum=0.9) vs torch.optim.SGD(lr=0.01, momentum=0.9), and adam(1e-3)
vs torch.optim.Adam(lr=1e-3, eps=1e-8). Before timing, the first step's loss and
updated parameters must agree within 1e-4 (those after three steps are printed);
adam is checked through an eps_root=0.0 twin of the step (see Config.check).

Models: mlp 784-512-512-10 (relu); cnn 28x28x1 as in bench/inference.py (conv 32
3x3 relu, max_pool 2, conv 64 3x3 relu, max_pool 2, flatten, dense 128 relu, dense
10). Configurations: mlp at batch 64 and 256 and cnn at batch 64, each with SGD
(momentum) and Adam.

Four variants are timed interleaved (bench/_common.interleaved: warm-up, then
--rounds rounds in rotating order, one sample per round = the mean time per step
of a block filling about --round-ms). Before every block the weights and optimizer
state go back to the same snapshot (untimed), so every round does the same work:

  axonc     step(train_state, x, y): the public API, Python wrapper included
  torch     the PyTorch step above, ending in loss.item()
  ort.run   the step's own onnxruntime session alone: session.run(outputs, feeds)
            with the numpy feeds the wrapper would build (no wrapper work)
  ort.bind  that session through IOBinding with two preallocated sets of OrtValues
            that swap roles each step (outputs of one step are the next step's
            inputs): no numpy conversion and no output allocation per step

axonc - ort.run is the wrapper's per-step Python work; ort.run - ort.bind is what
feeding numpy arrays and getting fresh output arrays back costs.

--profile also runs onnxruntime's profiler (SessionOptions.enable_profiling) on a
copy of each step's session and prints the kernel time per op type, and splits
PyTorch's step into forward+loss, backward and optimizer.step.

Run: python bench/train.py [--rounds 20] [--round-ms 200] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

import axonc as ax
from axonc.dtypes import TensorType
from axonc.model_state import ModelState
from axonc.to_onnx.export import to_onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    THREADS,
    BackgroundLoad,
    _version,
    interleaved,
    percentiles,
    print_machine,
    wait_quiet,
)
from inference import (
    _cell,
    _ratio,
    axonc_cnn,
    axonc_mlp,
    load_cnn,
    load_mlp,
    op_counts,
    torch_cnn,
)
from minimal_step import minimal_mlp_step

TOLERANCE = 1e-4
VARIANTS = ("axonc", "torch", "ort.run", "ort.bind", "hand.run", "hand.bind")
MLP_SIZES = [784, 512, 512, 10]
SGD_LR = 0.01
ADAM_LR = 1e-3
# the issue's targets: axonc's step time / PyTorch's
TARGETS = {"sgd": 0.6, "adam": 0.7}


# ---------------------------------------------------------------------------
# Models and optimizers


def torch_mlp_logits() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, 10),
    )


@dataclass
class Model:
    axonc: Callable[[], ax.Axon]  # ends in a softmax
    torch: Callable[[], nn.Module]  # ends in the logits
    load: Callable[[nn.Module, dict[str, Any]], None]
    sample: tuple[int, ...]
    to_torch: Callable[[np.ndarray], np.ndarray] = lambda x: x
    hand: bool = False  # has a hand-written minimal step (bench/minimal_step.py)


MODELS = {
    "mlp": Model(axonc_mlp, torch_mlp_logits, load_mlp, (784,), hand=True),
    # inference.py's cnn ends in dense(10); the loss wants probabilities
    "cnn": Model(
        lambda: axonc_cnn().activation("softmax"),
        torch_cnn,
        load_cnn,
        (28, 28, 1),
        lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
    ),
}

CONFIGS = [
    ("mlp", 64, "sgd"),
    ("mlp", 64, "adam"),
    ("mlp", 256, "sgd"),
    ("mlp", 256, "adam"),
    ("cnn", 64, "sgd"),
    ("cnn", 64, "adam"),
]


def optimizers(kind: str, params: Any) -> tuple[Any, torch.optim.Optimizer]:
    if kind == "sgd":
        return (
            ax.optimizers.sgd(SGD_LR, momentum=0.9),
            torch.optim.SGD(params, lr=SGD_LR, momentum=0.9),
        )
    return ax.optimizers.adam(ADAM_LR), torch.optim.Adam(params, lr=ADAM_LR, eps=1e-8)


# ---------------------------------------------------------------------------
# One configuration


class Config:
    """Both steps of one configuration, checked to agree, and the four timed callables."""

    def __init__(self, name: str, batch: int, kind: str):
        self.name, self.batch, self.kind = name, batch, kind
        m = MODELS[name]
        self.m = m
        self.module = m.torch()
        opt_a, self.opt = optimizers(kind, self.module.parameters())
        self.step = ax.train.compile_step(m.axonc(), "categorical_cross_entropy", opt_a)
        self.ts0 = self.step.init(ax.template((1, *m.sample), "f32"))
        with torch.no_grad():
            m.load(self.module, self.ts0.model_state.data)
        self.crit = nn.CrossEntropyLoss()

        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(batch, *m.sample)).astype(np.float32)
        labels = rng.integers(0, 10, batch)
        self.y = np.eye(10, dtype=np.float32)[labels]
        self.xt = torch.from_numpy(m.to_torch(self.x))
        self.yt = torch.from_numpy(labels.astype(np.int64))

    # ---- the two steps ---------------------------------------------------------

    def torch_step(self) -> float:
        self.opt.zero_grad()
        loss = self.crit(self.module(self.xt), self.yt)
        loss.backward()
        self.opt.step()
        return loss.item()

    def axonc_step(self) -> None:
        self.ts, _ = self.step(self.ts, self.x, self.y)

    # ---- the same function -------------------------------------------------------

    def param_diff(self, ts: Any) -> float:
        """Largest |difference| between axonc's parameters and torch's (torch layout)."""
        ref = copy.deepcopy(self.module)
        with torch.no_grad():
            self.m.load(ref, ts.model_state.data)
            return max(
                float((a - b).abs().max())
                for a, b in zip(ref.parameters(), self.module.parameters(), strict=True)
            )

    def check(self) -> dict[str, float]:
        """Three steps of both, compared; then the timed step is compiled and run 3 steps.

        axonc's adam adds eps_root (1e-15) under the square root, torch's does not: for a
        parameter whose gradient is ~1e-8 the first update then differs by ~3e-4 (the
        update is about lr * g / (|g| + eps)). So adam is checked with an eps_root=0.0
        twin of the step; the timed step is adam(1e-3) as is (onnxruntime removes the
        Add of a zero eps_root, so the twin's graph would be 6 nodes smaller).
        """
        twin = self.step
        if self.kind == "adam":
            twin = ax.train.compile_step(
                self.m.axonc(),
                "categorical_cross_entropy",
                ax.optimizers.adam(ADAM_LR, eps_root=0.0),
            )
        initial = (copy.deepcopy(self.module.state_dict()), copy.deepcopy(self.opt.state_dict()))
        ts, out = twin(twin.init(ax.template((1, *self.m.sample), "f32")), self.x, self.y)
        loss_t = self.torch_step()
        errs = {"loss": abs(float(out["loss"]) - loss_t), "params": self.param_diff(ts)}
        for what, err in errs.items():
            if not err <= TOLERANCE:
                raise SystemExit(
                    f"{self.label}: first step's {what} differ by {err:.3g} > {TOLERANCE}"
                )
        for _ in range(2):
            ts, out = twin(ts, self.x, self.y)
            loss_t = self.torch_step()
        errs["loss3"] = abs(float(out["loss"]) - loss_t)
        errs["params3"] = self.param_diff(ts)
        if twin is not self.step:
            # the timed step itself, against torch after one step from the same start
            self.module.load_state_dict(initial[0])
            self.opt.load_state_dict(initial[1])
            self.torch_step()
            errs["timed_params"] = self.param_diff(self.step(self.ts0, self.x, self.y)[0])
            for _ in range(2):
                self.torch_step()
        ts = self.ts0
        for _ in range(3):
            ts, _ = self.step(ts, self.x, self.y)
        self.ts = ts
        self.twin, self.errs = twin, errs
        self.snapshot()
        return errs

    @property
    def label(self) -> str:
        return f"{self.name} batch {self.batch} {self.kind}"

    # ---- snapshots: every timed block starts from the same weights ------------------

    def snapshot(self) -> None:
        self.ts_snap = self.ts
        self.torch_snap = (
            [p.detach().clone() for p in self.module.parameters()],
            copy.deepcopy(self.opt.state_dict()),
        )

    def reset_axonc(self) -> None:
        self.ts = self.ts_snap

    def reset_torch(self) -> None:
        params, opt_state = self.torch_snap
        with torch.no_grad():
            for p, s in zip(self.module.parameters(), params, strict=True):
                p.copy_(s)
        state = self.opt.state_dict()["state"]
        for i, slots in opt_state["state"].items():
            for k, v in slots.items():
                if isinstance(v, torch.Tensor):
                    state[i][k].copy_(v)

    # ---- the step's own session, without the wrapper -----------------------------------

    def session_parts(self) -> None:
        """The step's compiled session, its numpy feeds and an IOBinding ping-pong."""
        (compiled,) = self.step._compiled_models.values()
        (entry,) = compiled._cache.values()
        self.entry = entry
        sess = entry.session
        flat = self.ts_snap.flatten()
        feeds = {"x": self.x, "target": self.y}
        self.feeds = {n: feeds[n] if n in feeds else flat[n] for n in entry.input_names}
        names = entry.output_names
        self.ort_run = lambda: sess.run(names, self.feeds)

        # output name -> the input it feeds next step
        s = entry.structure
        feedback = {o: "/".join(p) for p, o in _leaves(s["params"])}
        feedback.update({o: "/".join(("__optimizer__", *p)) for p, o in _leaves(s["optimizer"])})
        self.ort_bind, self.reset_bind = pingpong(self.label, sess, self.feeds, feedback)
        if MODELS[self.name].hand:
            self.hand_parts()

    def hand_parts(self) -> None:
        """The hand-written minimal step (bench/minimal_step.py): checked, then timed alike."""
        kind = self.kind
        lr = SGD_LR if kind == "sgd" else ADAM_LR
        self.hand_model, feedback = minimal_mlp_step(MLP_SIZES, kind, lr=lr)
        sess = ort.InferenceSession(
            self.hand_model.SerializeToString(),
            ort.SessionOptions(),  # as CompiledModel's (threads: ORT's default)
            providers=["CPUExecutionProvider"],
        )
        self.hand_session = sess
        # its first step from the initial state matches axonc's (adam: the eps_root=0 twin)
        start = self.twin.init(ax.template((1, *self.m.sample), "f32"))
        ts, out = self.twin(start, self.x, self.y)
        flat0, flat1 = start.flatten(), ts.flatten()
        feeds0 = {"x": self.x, "target": self.y, **flat0}
        names = [o.name for o in sess.get_outputs()]
        got = dict(zip(names, sess.run(names, {i.name: feeds0[i.name] for i in sess.get_inputs()})))
        err = max(float(np.max(np.abs(got[o] - flat1[i]))) for o, i in feedback.items())
        err = max(err, abs(float(got["loss"]) - float(out["loss"])))
        if not err <= TOLERANCE:
            raise SystemExit(f"{self.label}: the hand-written step differs from axonc's by {err}")
        self.errs["hand"] = err
        feeds = {"x": self.x, "target": self.y, **self.ts_snap.flatten()}
        self.hand_feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
        self.hand_run = lambda: sess.run(names, self.hand_feeds)
        self.hand_bind, self.reset_hand = pingpong(self.label, sess, self.hand_feeds, feedback)

    def onnx_model(self) -> onnx.ModelProto:
        """The step graph as CompiledModel exports it (params as inputs)."""
        (graph,) = self.step._graphs.values()
        template = {
            "x": TensorType((None, *self.m.sample), "f32"),
            "target": TensorType((None, 10), "f32"),
        }
        return to_onnx(
            graph,
            ModelState.new(self.step._data(self.ts0)),
            mode="train",
            template=template,
            params_as_inputs=True,
        )


def pingpong(
    label: str, sess: ort.InferenceSession, feeds: dict[str, np.ndarray], feedback: dict[str, str]
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(step, reset) running `sess` through IOBinding with two preallocated sets of OrtValues
    that swap roles each step (outputs feeding back are bound to the next step's inputs)."""
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(names, feeds), strict=True))
    fed = set(feedback.values())
    bufs = [{n: ort.OrtValue.ortvalue_from_numpy(feeds[n].copy()) for n in fed} for _ in "ab"]
    fixed = {n: ort.OrtValue.ortvalue_from_numpy(v) for n, v in feeds.items() if n not in fed}
    extra = {
        o: ort.OrtValue.ortvalue_from_numpy(np.empty_like(v))
        for o, v in outs.items()
        if o not in feedback
    }
    bindings = []
    for src, dst in ((0, 1), (1, 0)):
        io = sess.io_binding()
        for n, v in {**fixed, **bufs[src]}.items():
            io.bind_ortvalue_input(n, v)
        for o in names:
            io.bind_ortvalue_output(o, bufs[dst][feedback[o]] if o in feedback else extra[o])
        bindings.append(io)
    phase = [0]

    def step() -> None:
        sess.run_with_iobinding(bindings[phase[0]])
        phase[0] ^= 1

    def reset() -> None:
        for n, v in bufs[0].items():
            v.update_inplace(np.ascontiguousarray(feeds[n]))
        phase[0] = 0

    # the bound path computes what session.run computes
    reset()
    step()
    got = {n: bufs[1][n].numpy() for n in fed}
    err = max(float(np.max(np.abs(got[feedback[o]] - outs[o]))) for o in feedback)
    if not err <= TOLERANCE:
        raise SystemExit(f"{label}: IOBinding step differs from session.run by {err}")
    return step, reset


def _leaves(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for k, v in tree.items():
        out += _leaves(v, (*prefix, k)) if isinstance(v, dict) else [((*prefix, k), v)]
    return out


# ---------------------------------------------------------------------------
# Profiles (--profile)

MATMUL = {"Gemm", "MatMul", "FusedGemm", "FusedMatMul", "Conv", "FusedConv", "NchwcConv"}
COPY = {"Identity", "Transpose", "Reshape", "Expand", "Cast", "Concat", "ReorderInput"}
COPY |= {"ReorderOutput", "Squeeze", "Unsqueeze", "Flatten"}


def ort_profile(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], title: str, steps: int = 30
) -> None:
    """onnxruntime's per-node kernel times for a step graph, by op type."""
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()  # what CompiledModel uses (threads: ORT's default)
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(d, "step")
        sess = ort.InferenceSession(
            model.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in sess.get_outputs()]
        for _ in range(10):
            sess.run(names, feeds)
        start = time.perf_counter()
        for _ in range(steps):
            sess.run(names, feeds)
        wall = (time.perf_counter() - start) / steps
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    by_op: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    runs = 0
    for e in events:
        if e.get("cat") == "Session" and e["name"] == "model_run":
            runs += 1
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[f"{e['args']['op_name']} {e['name'][: -len('_kernel_time')]}"] += e["dur"]
    runs = max(runs, 1)
    total = sum(by_op.values()) / runs
    groups: Counter[str] = Counter()
    for op, us in by_op.items():
        kind = (
            "matmul/conv" if op in MATMUL else "copy/layout" if op in COPY else "elementwise etc."
        )
        groups[kind] += us / runs
    print(
        f"  {title} ORT profile ({runs} runs): sum of kernel times {total / 1e3:.2f} ms/step, "
        f"session.run wall {wall * 1e3:.2f} ms/step (profiling on)"
    )
    print("    by kind: " + ", ".join(f"{k} {v / 1e3:.2f} ms" for k, v in groups.most_common()))
    print(
        "    by op: "
        + ", ".join(
            f"{op} {us / runs / 1e3:.2f}" for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])
        )
    )
    print("    top nodes (ms/step):")
    for node, us in sorted(by_node.items(), key=lambda kv: -kv[1])[:8]:
        print(f"      {us / runs / 1e3:6.2f}  {node}")


def torch_profile(c: Config, steps: int = 30) -> None:
    """PyTorch's step split into forward+loss, backward and optimizer.step (median ms)."""
    times: dict[str, list[float]] = {"zero_grad+forward+loss": [], "backward": [], "opt.step": []}
    for _ in range(steps):
        t0 = time.perf_counter()
        c.opt.zero_grad()
        loss = c.crit(c.module(c.xt), c.yt)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        c.opt.step()
        t3 = time.perf_counter()
        loss.item()
        for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            times[k].append(dt)
    print(
        "  torch phases (median ms): "
        + ", ".join(f"{k} {np.median(v) * 1e3:.2f}" for k, v in times.items())
    )


# ---------------------------------------------------------------------------
# Run and report


def run_config(c: Config, args: argparse.Namespace) -> tuple[dict[str, list[float]], dict]:
    start = time.perf_counter()
    errs = c.check()
    first = time.perf_counter() - start
    c.session_parts()
    model = c.onnx_model()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "opt.onnx")
        so = ort.SessionOptions()
        so.optimized_model_filepath = path
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        optimized = onnx.load(path)
    so = c.entry.session.get_session_options()
    info = {
        "nodes": len(model.graph.node),
        "nodes_opt": len(optimized.graph.node),
        "inputs": len(c.entry.input_names),
        "outputs": len(c.entry.output_names),
        "errs": errs,
    }
    print(
        f"  check + compile + 3 steps: {first:.2f} s; |loss diff| step 1 {errs['loss']:.1e}, "
        f"step 3 {errs['loss3']:.1e}; max |param diff| step 1 {errs['params']:.1e}, "
        f"step 3 {errs['params3']:.1e}"
        + (
            f"; the timed adam(1e-3) (eps_root 1e-15): step 1 {errs['timed_params']:.1e}"
            if "timed_params" in errs
            else ""
        )
    )
    print(
        f"  step graph: {info['nodes']} ONNX nodes ({op_counts(model)}); after ORT_ENABLE_ALL "
        f"{info['nodes_opt']} ({op_counts(optimized)}); {info['inputs']} inputs, "
        f"{info['outputs']} outputs"
    )
    print(
        f"  step session options: intra_op_num_threads={so.intra_op_num_threads}, "
        f"inter_op_num_threads={so.inter_op_num_threads}, "
        f"{so.graph_optimization_level}, {so.execution_mode}"
    )
    if c.m.hand:
        print(
            f"  hand-written step: {len(c.hand_model.graph.node)} nodes ({op_counts(c.hand_model)})"
        )
    if args.profile:
        ort_profile(model, c.feeds, "axonc step")
        if c.m.hand:
            ort_profile(c.hand_model, c.hand_feeds, "hand-written step")
        torch_profile(c)
        c.reset_torch()

    fns = {
        "axonc": c.axonc_step,
        "torch": c.torch_step,
        "ort.run": c.ort_run,
        "ort.bind": c.ort_bind,
    }
    before = {"axonc": c.reset_axonc, "torch": c.reset_torch, "ort.bind": c.reset_bind}
    if c.m.hand:
        fns.update({"hand.run": c.hand_run, "hand.bind": c.hand_bind})
        before["hand.bind"] = c.reset_hand
    wait_quiet(timeout=30.0)
    with BackgroundLoad() as load:
        samples = interleaved(
            fns,
            rounds=args.rounds,
            round_seconds=args.round_ms / 1e3,
            warmup_seconds=args.warmup_ms / 1e3,
            before=before,
        )
    info["load"] = load.cores
    med = {k: percentiles(v)[1] for k, v in samples.items()}
    print(
        "  "
        + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in med.items())
        + f"; axonc/torch {med['axonc'] / med['torch']:.2f}; background load {load.cores:.2f}"
    )
    return samples, info


def report(results: dict[str, tuple[dict[str, list[float]], dict]]) -> None:
    print("\n### Step time (ms per step: median (p10–p90))\n")
    print(
        "| model | batch | optimizer | axonc step | torch step | **axonc/torch** | target "
        "| ort.run | ort.bind | ort.run/torch | ort.bind/torch | bg load |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, (s, info) in results.items():
        name, batch, kind = label.split()
        cells = [_cell(s[v], 1e3, ",.2f") for v in ("axonc", "torch", "ort.run", "ort.bind")]
        print(
            f"| {name} | {batch} | {kind} | {cells[0]} | {cells[1]} "
            f"| {_ratio(s['axonc'], s['torch'])} | ≤ {TARGETS[kind]} | {cells[2]} | {cells[3]} "
            f"| {_ratio(s['ort.run'], s['torch'])} | {_ratio(s['ort.bind'], s['torch'])} "
            f"| {info['load']:.2f} |"
        )
    print("\n### Where axonc's step time goes (medians, ms per step)\n")
    print(
        "| model | batch | optimizer | wrapper (axonc − ort.run) "
        "| numpy in/out (ort.run − ort.bind) | session (ort.bind) | ONNX nodes (after ORT) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    for label, (s, info) in results.items():
        name, batch, kind = label.split()
        a, r, b = (percentiles(s[v])[1] * 1e3 for v in ("axonc", "ort.run", "ort.bind"))
        print(
            f"| {name} | {batch} | {kind} | {a - r:.2f} | {r - b:.2f} | {b:.2f} "
            f"| {info['nodes']} ({info['nodes_opt']}) |"
        )


def report_anchor(results: dict[str, tuple[dict[str, list[float]], dict]]) -> None:
    print("\n### The anchor: axonc's step vs the hand-written minimal step (medians, ms)\n")
    print(
        "| model | batch | optimizer | ort.run | hand.run | **ort.run/hand.run** "
        "| ort.bind | hand.bind | ort.bind/hand.bind | axonc/hand.run | hand.run/torch |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, (s, _) in results.items():
        if "hand.run" not in s:
            continue
        name, batch, kind = label.split()
        med = {k: percentiles(v)[1] * 1e3 for k, v in s.items()}
        print(
            f"| {name} | {batch} | {kind} | {med['ort.run']:.2f} | {med['hand.run']:.2f} "
            f"| {_ratio(s['ort.run'], s['hand.run'])} | {med['ort.bind']:.2f} "
            f"| {med['hand.bind']:.2f} | {_ratio(s['ort.bind'], s['hand.bind'])} "
            f"| {_ratio(s['axonc'], s['hand.run'])} | {_ratio(s['hand.run'], s['torch'])} |"
        )


# ---------------------------------------------------------------------------
# The digits loop (README's main job): ax.Loop's per-iteration overhead, and a whole run

DIGITS_EPOCHS, DIGITS_BATCH = 20, 32


def digits_data() -> tuple[list, np.ndarray, np.ndarray]:
    """(each epoch's batches, shuffled as examples/train_digits.py does, x_test, y_test)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    from train_digits import split

    x_train, y_train, x_test, y_test = split()
    epochs = []
    for epoch in range(DIGITS_EPOCHS):
        order = np.random.default_rng(epoch).permutation(len(x_train))
        epochs.append(
            [
                (x_train[order[i : i + DIGITS_BATCH]], y_train[order[i : i + DIGITS_BATCH]])
                for i in range(0, len(order), DIGITS_BATCH)
            ]
        )
    return epochs, x_test, y_test


def digits_model() -> ax.Axon:
    return (
        ax.input("pixels", shape=(None, 64))
        .dense(128, activation="relu")
        .dense(10, activation="softmax")
    )


def digits_loop() -> ax.Loop:
    return ax.Loop.trainer(
        digits_model(), "categorical_cross_entropy", ax.optimizers.adam(1e-3), log=0
    ).metric("accuracy")


def torch_digits_run(epochs: list, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """The same run in PyTorch eager: Adam 1e-3, cross-entropy on logits, a running
    accuracy per iteration as ax.Loop keeps; returns the test accuracy."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()
    for batches in epochs:
        acc, loss_avg = 0.0, 0.0
        for i, (x, y) in enumerate(batches):
            xt, labels = torch.from_numpy(x), torch.from_numpy(y.argmax(1))
            opt.zero_grad()
            logits = module(xt)
            loss = crit(logits, labels)
            loss.backward()
            opt.step()
            batch_acc = (logits.argmax(1) == labels).float().mean().item()
            acc = (acc * i + batch_acc) / (i + 1)
            loss_avg = (loss_avg * i + loss.item()) / (i + 1)
    with torch.no_grad():
        pred = module(torch.from_numpy(x_test)).argmax(1).numpy()
    return float(np.mean(pred == y_test.argmax(1)))


def axonc_digits_run(epochs: list, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """examples/train_digits.py's training (without validation and checkpoints)."""
    state = digits_loop().run(lambda e: epochs[e], epochs=DIGITS_EPOCHS, progress=False)
    _, predict = ax.build(digits_model())
    pred = np.asarray(predict(state, x_test)).argmax(1)
    return float(np.mean(pred == y_test.argmax(1)))


def loop_bench(args: argparse.Namespace) -> None:
    """Per-iteration cost of ax.Loop (accuracy metric) vs step() vs the bare session, then
    a whole 20-epoch digits run vs the PyTorch eager loop, interleaved."""
    epochs, x_test, y_test = digits_data()
    batches = epochs[0]
    loop = digits_loop()
    step = ax.train.compile_step(
        digits_model(), "categorical_cross_entropy", ax.optimizers.adam(1e-3)
    )
    ts0 = step.init(ax.template((1, 64), "f32"))
    ts, _ = step(ts0, *batches[0])
    (compiled,) = step._compiled_models.values()
    (entry,) = compiled._cache.values()
    flat = ts.flatten()
    feeds = {n: flat[n] for n in entry.input_names if n in flat}
    run_epochs = 5

    def loop_epochs() -> None:
        loop.run(batches, epochs=run_epochs, progress=False)

    def step_epochs() -> None:
        t = ts0
        for _ in range(run_epochs):
            for x, y in batches:
                t, _ = step(t, x, y)

    def session_epochs() -> None:
        for _ in range(run_epochs):
            for x, y in batches:
                feeds["pixels"], feeds["target"] = x, y
                entry.session.run(entry.output_names, feeds)

    n = run_epochs * len(batches)
    print(
        f"\ndigits loop: MLP 64-128-10, adam 1e-3, batch {DIGITS_BATCH}, {len(batches)} "
        f"iterations per epoch, accuracy metric; one sample = {run_epochs} epochs"
    )
    wait_quiet(timeout=30.0)
    with BackgroundLoad() as load:
        samples = interleaved(
            {"ax.Loop": loop_epochs, "step()": step_epochs, "session.run": session_epochs},
            rounds=args.rounds,
            round_seconds=args.round_ms / 1e3,
            warmup_seconds=args.warmup_ms / 1e3,
        )
    per_it = {k: [v / n for v in vs] for k, vs in samples.items()}
    med = {k: percentiles(v)[1] * 1e6 for k, v in per_it.items()}
    print("\n### ax.Loop per iteration (µs: median (p10–p90))\n")
    print("| ax.Loop | step() | session.run | **Loop − step()** | step() − session.run | bg load |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {_cell(per_it['ax.Loop'], 1e6, ',.0f')} | {_cell(per_it['step()'], 1e6, ',.0f')} "
        f"| {_cell(per_it['session.run'], 1e6, ',.0f')} | **{med['ax.Loop'] - med['step()']:.0f}** "
        f"| {med['step()'] - med['session.run']:.0f} | {load.cores:.2f} |"
    )

    runs: dict[str, list[float]] = {"ax.Loop": [], "torch": []}
    accs: dict[str, list[float]] = {"ax.Loop": [], "torch": []}
    whole = {"ax.Loop": axonc_digits_run, "torch": torch_digits_run}
    wait_quiet(timeout=30.0)
    with BackgroundLoad() as load:
        for r in range(max(3, args.rounds // 4)):  # whole runs, the order alternating
            for name in list(whole)[r % 2 :] + list(whole)[: r % 2]:
                start = time.perf_counter()
                accs[name].append(whole[name](epochs, x_test, y_test))
                runs[name].append(time.perf_counter() - start)
    print(f"\n### A whole {DIGITS_EPOCHS}-epoch digits run (s: median (p10–p90))\n")
    print(
        "| ax.Loop (accuracy metric) | PyTorch eager loop | **ax.Loop/torch** "
        "| test accuracy axonc / torch | bg load |"
    )
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {_cell(runs['ax.Loop'], 1, '.2f')} | {_cell(runs['torch'], 1, '.2f')} "
        f"| {_ratio(runs['ax.Loop'], runs['torch'])} "
        f"| {np.median(accs['ax.Loop']):.3f} / {np.median(accs['torch']):.3f} | {load.cores:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--round-ms", type=float, default=200.0, help="per variant per round")
    parser.add_argument("--warmup-ms", type=float, default=500.0, help="per variant")
    parser.add_argument("--configs", nargs="*", help='e.g. "mlp 64 sgd" (default: all six)')
    parser.add_argument("--profile", action="store_true", help="ORT profiler and torch phases")
    parser.add_argument("--no-loop", action="store_true", help="skip the digits loop section")
    parser.add_argument("--loop-only", action="store_true", help="only the digits loop section")
    args = parser.parse_args()

    torch.set_num_threads(THREADS)
    print_machine()
    print(
        f"torch threads {torch.get_num_threads()}; the step's onnxruntime session: "
        "CompiledModel's SessionOptions (see 'step session options' below)"
    )
    training = _version("onnxruntime-training")
    print(f"onnxruntime-training: {training}")

    if not args.no_loop:
        loop_bench(args)
    if args.loop_only:
        return
    results = {}
    for name, batch, kind in CONFIGS:
        label = f"{name} {batch} {kind}"
        if args.configs and label not in args.configs:
            continue
        print(f"\n{label}")
        results[label] = run_config(Config(name, batch, kind), args)
    report(results)
    report_anchor(results)


if __name__ == "__main__":
    main()
