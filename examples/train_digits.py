"""Train a digit classifier with ax.Loop, compile it to ONNX and check the compiled model.

scikit-learn's bundled 8x8 digits (1797 images, no download): pixels / 16, an 80/20
split by np.random.default_rng(7).permutation, an MLP 64-128 relu-10 softmax, Adam 1e-3,
batch 32, 20 epochs (each epoch shuffled by a generator seeded with the epoch, so a run
resumed from a checkpoint sees the same batches). The loop tracks accuracy, validates
on the test split every epoch, checkpoints the best validation accuracy and writes its
metric history (`axonc plot OUT/history.jsonl -o curves.png` draws it). Then the model
is saved (.axon), compiled to ONNX, run with axonrt, and the compiled model's test
accuracy must equal the loop's.

Run: python examples/train_digits.py [output-dir]   (default examples/out)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

import axonc as ax
import axonrt

EPOCHS, BATCH = 20, 32


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): pixels / 16 as f32, one-hot f32 targets."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[digits.target]
    order = np.random.default_rng(7).permutation(len(x))
    cut = int(0.8 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def main(out: Path) -> float:
    x_train, y_train, x_test, y_test = split()

    def train_batches(epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        order = np.random.default_rng(epoch).permutation(len(x_train))
        return [
            (x_train[order[i : i + BATCH]], y_train[order[i : i + BATCH]])
            for i in range(0, len(order), BATCH)
        ]

    test_batches = [
        (x_test[i : i + BATCH], y_test[i : i + BATCH]) for i in range(0, len(x_test), BATCH)
    ]

    model = (
        ax.input("pixels", shape=(None, 64))
        .dense(128, activation="relu")
        .dense(10, activation="softmax")
    )
    loop = (
        ax.Loop.trainer(model, "categorical_cross_entropy", ax.optimizers.adam(1e-3), log=0)
        .metric("accuracy")
        .validate(model, test_batches)
        .checkpoint(path=out / "checkpoints", criteria="validation_accuracy", mode="max")
        .history(out / "history.jsonl")
    )
    start = time.perf_counter()
    state = loop.run(train_batches, epochs=EPOCHS)
    seconds = time.perf_counter() - start

    metrics = (
        ax.Loop.evaluator(model).metric("accuracy").run(test_batches, state, progress=False)[0]
    )
    loop_accuracy = float(metrics["accuracy"])

    ax.save(model, state, out / "digits.axon")
    saved_model, saved_state = ax.load(out / "digits.axon")
    ax.export_onnx(saved_model, saved_state, out / "digits.onnx")
    compiled = axonrt.load(out / "digits.onnx")
    probs = np.asarray(compiled(x_test))
    correct = probs.argmax(axis=1) == y_test.argmax(axis=1)
    onnx_accuracy = float(np.mean(correct))
    # the evaluator's accuracy is the mean of its per-batch accuracies (Axon's running
    # average); the compiled model's, computed the same way, must agree
    per_batch = float(
        np.mean([np.mean(correct[i : i + BATCH]) for i in range(0, len(x_test), BATCH)])
    )
    if not np.isclose(per_batch, loop_accuracy, rtol=0, atol=1e-6):
        raise SystemExit(
            f"the compiled model disagrees with the loop: {per_batch:.6f} vs {loop_accuracy:.6f}"
        )

    images = f"{len(x_train)} train / {len(x_test)} test images"
    print(f"digits: {images}, {EPOCHS} epochs in {seconds:.1f}s")
    print(f"test accuracy: {onnx_accuracy:.4f} (ONNX via axonrt; the loop's evaluator agrees)")
    print(f"wrote {out / 'digits.axon'}, {out / 'digits.onnx'}, {out / 'history.jsonl'}")
    history, curves = out / "history.jsonl", out / "curves.png"
    print(f"plot the curves (needs the plot extra): axonc plot {history} -o {curves}")
    return onnx_accuracy


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("examples/out")
    target.mkdir(parents=True, exist_ok=True)
    main(target)
