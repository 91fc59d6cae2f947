"""Training speed: onnxruntime-training's step vs axonc's compiled step vs PyTorch eager.

Runs in the onnxruntime-training environment (spec/ort_training.md: Python 3.11,
onnxruntime-training-cpu 1.19.2, torch 2.13.0 CPU, axonc --no-deps), where axonc's own
step runs on the onnxruntime 1.19.2 that package installs, so all three peers share one
process, one run and one onnxruntime build.

bench/train.py's models: the MLP 784-512-512-10 at batch 64 and 256 and the CNN (28x28x1,
two conv + max-pool, dense 128) at batch 64, with plain SGD(0.01) (onnxruntime-training
has no momentum) and Adam(1e-3, eps_root 0), every peer starting from the same initial
weights on the same batch:

  ort-training  ax.train.export_ort_training's artifacts with onnxruntime.training.api:
                Module(target, x), Optimizer.step(), Module.lazy_reset_grad()
  engine        the Loop's ort-training step (ax.Loop.trainer(engine="ort-training")):
                the above plus reading the trained parameters back into a ModelState
  axonc         ax.train.compile_step: step(train_state, x, y)
  torch         zero_grad / forward / CrossEntropyLoss on the logits / backward / step

Before timing, the first step's losses must agree within 1e-4. The variants are timed
interleaved (bench/_common.interleaved: warm-up, then --rounds rounds in rotating order,
one sample per round = the mean time per step of a block of about --round-ms); every
variant keeps training through the rounds (a dense MLP's work per step does not depend
on the values). Threads: 2 for every peer.

Run: python bench/ort_training.py [--rounds 15] [--round-ms 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.training.api import CheckpointState, Module, Optimizer
from torch import nn

import axonc as ax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import THREADS, BackgroundLoad, _version, interleaved, percentiles, print_machine
from inference import load_cnn, load_mlp, torch_cnn
from models import axonc_cnn, axonc_mlp

VARIANTS = ("ort-training", "engine", "axonc", "torch")
CONFIGS = [
    ("mlp", 64, "sgd"),
    ("mlp", 64, "adam"),
    ("mlp", 256, "sgd"),
    ("mlp", 256, "adam"),
    ("cnn", 64, "sgd"),
    ("cnn", 64, "adam"),
]
LR = {"sgd": 0.01, "adam": 1e-3}
TOLERANCE = 1e-4


def _optimizers(kind: str, params) -> tuple[object, torch.optim.Optimizer]:
    if kind == "sgd":
        return ax.optimizers.sgd(LR[kind]), torch.optim.SGD(params, lr=LR[kind])
    return ax.optimizers.adam(LR[kind], eps_root=0.0), torch.optim.Adam(params, lr=LR[kind])


def _torch_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )


# name: (axonc model ending in a softmax, torch model ending in the logits, weight loader,
# sample shape, the torch layout of a batch)
MODELS = {
    "mlp": (axonc_mlp, _torch_mlp, load_mlp, (784,), lambda x: x),
    "cnn": (
        lambda: axonc_cnn().activation("softmax"),
        torch_cnn,
        load_cnn,
        (28, 28, 1),
        lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
    ),
}


class Config:
    """The four steps of one configuration from the same weights and batch."""

    def __init__(self, name: str, batch: int, kind: str, workdir: str):
        torch.set_num_threads(THREADS)
        build, build_torch, load, sample, to_torch = MODELS[name]
        self.model = build()
        self.torch = build_torch()
        opt_a, self.torch_opt = _optimizers(kind, self.torch.parameters())
        self.step = ax.train.compile_step(self.model, "categorical_cross_entropy", opt_a)
        self.ts = self.step.init(ax.template((1, *sample), "f32"))
        state = self.ts.model_state
        with torch.no_grad():
            load(self.torch, state.data)
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(batch, *sample)).astype(np.float32)
        labels = rng.integers(0, 10, batch)
        self.y = np.eye(10, dtype=np.float32)[labels]
        self.xt, self.yt = torch.from_numpy(to_torch(self.x)), torch.from_numpy(labels)
        self.crit = nn.CrossEntropyLoss()

        arts = ax.train.export_ort_training(
            self.model, "categorical_cross_entropy", opt_a, workdir, state=state
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        self.ckpt = CheckpointState.load_checkpoint(str(arts.checkpoint))
        self.module = Module(
            str(arts.training_model), self.ckpt, str(arts.eval_model), session_options=options
        )
        self.opt = Optimizer(str(arts.optimizer_model), self.module)
        self.opt.set_learning_rate(LR[kind])
        self.module.train()
        self.feeds = [{"x": self.x, "target": self.y}[n] for n in arts.inputs]

        init_fn, self.engine_step = ax.Loop.trainer(
            self.model, "categorical_cross_entropy", opt_a, engine="ort-training"
        ).rebuild("onnxruntime")
        self.batch = (self.x, self.y)
        self.engine_state = init_fn(self.batch, state)

    def ort_training(self) -> float:
        loss, _ = self.module(*self.feeds)
        self.opt.step()
        self.module.lazy_reset_grad()
        return float(loss)

    def engine(self) -> float:
        self.engine_state = self.engine_step(self.batch, self.engine_state)
        return float(self.engine_state["loss"])

    def axonc(self) -> float:
        self.ts, out = self.step(self.ts, self.x, self.y)
        return float(out["loss"])

    def torch_step(self) -> float:
        self.torch_opt.zero_grad()
        loss = self.crit(self.torch(self.xt), self.yt)
        loss.backward()
        self.torch_opt.step()
        return loss.item()

    def check(self) -> dict[str, float]:
        """The first step's loss of every peer (they start from the same weights)."""
        losses = {
            "ort-training": self.ort_training(),
            "engine": self.engine(),
            "axonc": self.axonc(),
            "torch": self.torch_step(),
        }
        spread = max(losses.values()) - min(losses.values())
        if spread > TOLERANCE:
            raise SystemExit(f"the peers disagree on the first loss: {losses}")
        return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--round-ms", type=float, default=200.0)
    args = parser.parse_args()
    ort.set_default_logger_severity(3)  # the optimizer model's harmless shape-merge warnings
    print_machine()
    print(
        f"onnxruntime-training {_version('onnxruntime-training-cpu')}, torch "
        f"{_version('torch')}, numpy {np.__version__}\n"
    )
    print(
        "| model | batch | optimizer | ort-training | engine | axonc | torch | ort-training/torch "
        "| axonc/ort-training | engine − ort-training | bg load |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, batch, kind in CONFIGS:
        with tempfile.TemporaryDirectory() as workdir:
            c = Config(name, batch, kind, workdir)
            c.check()
            fns = {
                "ort-training": c.ort_training,
                "engine": c.engine,
                "axonc": c.axonc,
                "torch": c.torch_step,
            }
            with BackgroundLoad() as load:
                s = interleaved(
                    fns,
                    rounds=args.rounds,
                    round_seconds=args.round_ms / 1e3,
                    warmup_seconds=0.5,
                )
        med = {v: percentiles(s[v])[1] * 1e3 for v in VARIANTS}
        print(
            f"| {name} | {batch} | {kind} | {med['ort-training']:.2f} | {med['engine']:.2f} "
            f"| {med['axonc']:.2f} | {med['torch']:.2f} "
            f"| {med['ort-training'] / med['torch']:.2f} "
            f"| {med['axonc'] / med['ort-training']:.2f} "
            f"| {med['engine'] - med['ort-training']:.2f} | {load.cores:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
