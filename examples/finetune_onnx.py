"""On-device fine-tuning: a train step exported as ONNX, driven with onnxruntime + numpy only.

1. On the workstation (axonc): train a small classifier, export its train step
   (`step.export`) and save the train state's tensors (`TrainState.flatten`) to .npz.
2. On the device (`device_finetune`, which imports nothing but onnxruntime and
   numpy): load the step, loop over local batches feeding each step's new
   parameters, optimizer state and batch-norm statistics back as the next inputs
   (the `axonc.train_feedback` metadata maps outputs to inputs), save the result.
3. Back in axonc: `TrainState.load_flat` reads the tuned tensors; evaluate them.

The device data is the workstation's task with shifted classes, so accuracy drops
before fine-tuning and recovers after. spec/training.md describes the exported step.

Run: python examples/finetune_onnx.py [output-dir]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

import axonc as ax

FEATURES, CLASSES = 10, 3


def device_finetune(
    step_file: Path, tensors_file: Path, x: np.ndarray, y: np.ndarray, *, epochs: int, batch: int
) -> dict[str, np.ndarray]:
    """Fine-tune on (x, y) with the exported step; only onnxruntime and numpy are used."""
    session = ort.InferenceSession(str(step_file), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    feedback = json.loads(meta["axonc.train_feedback"])  # output name -> input name
    noise_inputs = json.loads(meta["axonc.noise_inputs"])  # name -> shape, None = batch
    loss_output = json.loads(meta["axonc.outputs"])["dict"]["loss"]
    input_names = {i.name for i in session.get_inputs()}
    output_names = [o.name for o in session.get_outputs()]
    with np.load(tensors_file) as saved:
        feeds = {name: saved[name] for name in saved.files if name in input_names}
    rng = np.random.default_rng(0)  # shuffling and dropout noise
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            feeds["x"], feeds["target"] = x[idx], y[idx]
            for name, shape in noise_inputs.items():
                dims = [len(idx) if d is None else d for d in shape]
                feeds[name] = rng.random(dims, dtype=np.float32)
            values = dict(zip(output_names, session.run(None, feeds)))
            feeds.update({name: values[out] for out, name in feedback.items()})
            losses.append(float(values[loss_output]))
        print(f"  device epoch {epoch}: loss {np.mean(losses):.4f}")
    return {name: feeds[name] for name in feedback.values()}


def blobs(n: int, centres: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters around `centres`, one-hot labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    x = centres[labels] + rng.normal(scale=1.0, size=(n, FEATURES))
    return x.astype(np.float32), np.eye(CLASSES, dtype=np.float32)[labels]


def accuracy(model: ax.Axon, state: ax.ModelState, x: np.ndarray, y: np.ndarray) -> float:
    _, predict = ax.build(model)
    return float(np.mean(predict(state, x).argmax(1) == y.argmax(1)))


def main(out_dir: Path) -> None:
    rng = np.random.default_rng(42)
    centres = rng.normal(scale=1.5, size=(CLASSES, FEATURES))
    shifted = centres + rng.normal(scale=3.0, size=(CLASSES, FEATURES))
    x_ws, y_ws = blobs(600, centres, seed=1)
    x_dev, y_dev = blobs(300, shifted, seed=2)
    x_test, y_test = blobs(300, shifted, seed=3)

    # -- 1. workstation: train, export the step, save the tensors
    model = (
        ax.input("x", shape=(None, FEATURES))
        .dense(32, use_bias=False)
        .batch_norm()
        .relu()
        .dropout(rate=0.2, seed=0)
        .dense(CLASSES, activation="softmax")
    )
    step = ax.train.compile_step(model, "categorical_cross_entropy", ax.optimizers.adam(1e-2))
    ts = step.init(ax.template((None, FEATURES), "f32"))
    for _ in range(5):
        for start in range(0, len(x_ws), 32):
            ts, _ = step(ts, x_ws[start : start + 32], y_ws[start : start + 32])
    print(f"workstation accuracy: {accuracy(model, ts.model_state, x_ws, y_ws):.3f}")
    print(f"accuracy before fine-tuning: {accuracy(model, ts.model_state, x_test, y_test):.3f}")
    step_file, tensors_file = out_dir / "train_step.onnx", out_dir / "train_state.npz"
    step.export(step_file, ts, x_ws[:32], y_ws[:32])
    np.savez(tensors_file, **ts.flatten())

    # -- 2. device: onnxruntime + numpy
    tensors = device_finetune(step_file, tensors_file, x_dev, y_dev, epochs=5, batch=32)

    # -- 3. workstation again: read the tuned tensors back
    tuned = ts.load_flat(tensors).model_state
    print(f"accuracy after fine-tuning: {accuracy(model, tuned, x_test, y_test):.3f}")
    ax.save(model, tuned, out_dir / "finetuned.axon")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
