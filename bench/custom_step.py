"""Hand-written steps: `anp.value_and_grad` + an update in numpy vs the compiled train step.

The same MLP (64-128-128-10, relu, softmax; categorical cross-entropy, plain SGD 0.01)
trained one batch per call, timed interleaved (bench/_common.interleaved):

  trainer          ax.train.compile_step(model, loss, sgd(0.01)): one onnxruntime call
                   holding forward, loss, gradient and update
  value_and_grad   (loss, grads) = anp.value_and_grad(params, objective) with
                   objective = loss of predict_fn(params, x) (train mode), then
                   params - 0.01 * grads in numpy: the cheatsheet's manual loop
  vg.session       the session value_and_grad compiled, run alone on the same feeds
                   (what the call costs without recording the function again)

value_and_grad - vg.session is the per-call Python work: recording the function,
keying the cache, feeding the arrays. A GAN step (two value_and_grad calls on a
4-16-2 generator and a 2-16-2 discriminator, batch 32, as tests/compiler/
test_custom_training_steps.py) is timed on its own.

Run: python bench/custom_step.py [--rounds 15] [--round-ms 200]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import BackgroundLoad, interleaved, percentiles, print_machine

import axonc as ax
import axonc.numpy as anp
from axonc import defn


def _mlp():
    return (
        ax.input("x", shape=(None, 64))
        .dense(128, activation="relu")
        .dense(128, activation="relu")
        .dense(10, activation="softmax")
    )


def _sgd(params: ax.ModelState, grads: ax.ModelState, lr: float) -> ax.ModelState:
    g = grads.data
    data = {
        layer: {k: v - lr * g[layer][k] for k, v in leaves.items()}
        for layer, leaves in params.data.items()
    }
    return ax.ModelState(data, parameters=params.parameters, state=params.state)


class _Capture:
    """A session stand-in that keeps the feeds of its last run."""

    def __init__(self, session):
        self.session = session
        self.feeds = None

    def run(self, names, feeds):
        self.feeds = feeds
        return self.session.run(names, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)


def mlp_variants(batch: int):
    model = _mlp()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 64)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    step = ax.train.compile_step(model, "categorical_cross_entropy", ax.optimizers.sgd(0.01))
    holder = {"ts": step.init(ax.template((1, 64), "f32"))}
    init_fn, predict_fn = ax.build(model, mode="train")
    start = init_fn(ax.template((1, 64), "f32"))
    params = {"p": start}

    def objective(p):
        preds = predict_fn(p, x)["prediction"]
        return ax.losses.categorical_cross_entropy(y, preds, reduction="mean")

    def trainer():
        holder["ts"], _ = step(holder["ts"], x, y)

    def value_and_grad():
        _, grads = anp.value_and_grad(params["p"], objective)
        params["p"] = _sgd(params["p"], grads, 0.01)

    value_and_grad()
    entry = next(reversed(defn._CACHE.values()))
    real_session = entry.session
    entry.session = _Capture(real_session)
    value_and_grad()
    feeds = entry.session.feeds
    entry.session = real_session

    def session():
        entry.session.run(None, feeds)

    return {"trainer": trainer, "value_and_grad": value_and_grad, "vg.session": session}


def gan_step():
    z, batch = 4, 32
    gen = ax.input("noise", shape=(None, z)).dense(16).leaky_relu(alpha=0.2).dense(2)
    disc = (
        ax.input("x", shape=(None, 2))
        .dense(16)
        .leaky_relu(alpha=0.2)
        .dense(2, activation="softmax")
    )
    init_g, g_model = ax.build(gen, mode="train")
    init_d, d_model = ax.build(disc, mode="train")
    s = {"g": init_g(ax.template((1, z), "f32")), "d": init_d(ax.template((1, 2), "f32"))}
    s["key"] = anp.random.key(1)
    fake = np.tile(np.array([[1.0, 0.0]], np.float32), (batch, 1))
    real_labels = fake[:, ::-1].copy()
    labels = np.concatenate([fake, real_labels])
    real = np.random.default_rng(0).normal(size=(batch, 2)).astype(np.float32)

    def cce(t, p):
        return -anp.mean(anp.sum(t * anp.log(anp.clip(p, 1e-7, 1.0)), axis=-1))

    def step():
        noise, s["key"] = anp.random.normal(s["key"], shape=(batch, z))

        def d_loss(p):
            f = g_model(s["g"], noise)["prediction"]
            both = anp.concatenate([d_model(p, f)["prediction"], d_model(p, real)["prediction"]])
            return cce(labels, both)

        _, dg = anp.value_and_grad(s["d"], d_loss)
        s["d"] = _sgd(s["d"], dg, 0.05)
        _, gg = anp.value_and_grad(
            s["g"],
            lambda p: cce(
                real_labels, d_model(s["d"], g_model(p, noise)["prediction"])["prediction"]
            ),
        )
        s["g"] = _sgd(s["g"], gg, 0.05)

    return {"gan step": step}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--round-ms", type=float, default=200.0)
    args = parser.parse_args()
    print_machine()
    print("\n| config | variant | median ms/step | p10-p90 | vs trainer | bg load |")
    print("|---|---|---|---|---|---|")
    for name, fns in [
        ("mlp b64", mlp_variants(64)),
        ("mlp b256", mlp_variants(256)),
        ("gan b32", gan_step()),
    ]:
        with BackgroundLoad() as load:
            samples = interleaved(
                fns, rounds=args.rounds, round_seconds=args.round_ms / 1e3, warmup_seconds=0.3
            )
        base = np.median(samples["trainer"]) if "trainer" in samples else None
        for variant, times in samples.items():
            p10, p50, p90 = percentiles(times)
            ratio = f"{p50 / base:.2f}x" if base else "-"
            print(
                f"| {name} | {variant} | {p50 * 1e3:.2f} | {p10 * 1e3:.2f}-{p90 * 1e3:.2f} "
                f"| {ratio} | {load.cores:.2f} |"
            )


if __name__ == "__main__":
    main()
