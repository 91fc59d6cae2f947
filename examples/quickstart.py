"""Build, initialise, run and save an Axon-style MLP, then load it back and check it.

Run: python examples/quickstart.py [output-dir]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import axonc as ax


def main(out_dir: Path) -> None:
    model = (
        ax.input("input", shape=(None, 784))
        .dense(128, activation="relu")
        .batch_norm()
        .dropout(rate=0.8)
        .dense(64)
        .tanh()
        .dense(10)
        .activation("softmax")
    )
    print(model)
    print(ax.display.as_table(model, ax.template((1, 784), "f32")))

    init_fn, predict_fn = ax.build(model, mode="inference")
    state = init_fn(ax.template((1, 784), "f32"), ax.ModelState.empty())
    x = np.random.default_rng(0).normal(size=(4, 784)).astype(np.float32)
    y = predict_fn(state, x)
    print("inference prediction shape:", y.shape, "row sums:", np.round(y.sum(axis=1), 5))

    # Train mode adds the dropout layer's PRNG key to the state; init keeps the rest.
    train_init, train_predict = ax.build(model, mode="train")
    out = train_predict(train_init(ax.template((1, 784), "f32"), state), x)
    print("train mode returns:", sorted(out), "with state for", sorted(out["state"]))

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "mlp.axon"
    ax.save(model, state, path)
    model2, state2 = ax.load(path)
    y2 = ax.build(model2)[1](state2, x)
    assert np.array_equal(y, y2), "the loaded model must reproduce the saved one exactly"
    print(f"saved {path} ({path.stat().st_size} bytes); loaded model reproduces the outputs")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("examples/out"))
