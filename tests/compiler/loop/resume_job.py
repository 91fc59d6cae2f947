"""The training job of the kill-and-resume test, run as a child process:

    python -m tests.compiler.loop.resume_job train DIR    # checkpoints to DIR every epoch
    python -m tests.compiler.loop.resume_job resume DIR   # from DIR's latest checkpoint,
                                                          # writes DIR/final.safetensors

Each epoch sleeps a little per batch so the parent can kill it mid-run.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

import axonc as ax
from axonc import Loop, ModelState, optimizers
from axonc.loop import deserialize_state

EPOCHS = 6
RNG = np.random.default_rng(5)
X = RNG.normal(size=(40, 6)).astype(np.float32)
Y = np.eye(3, dtype=np.float32)[np.argmax(X[:, :3], axis=1)]


def batches(epoch: int) -> list:
    order = np.random.default_rng(100 + epoch).permutation(len(X))
    return [(X[order[i : i + 8]], Y[order[i : i + 8]]) for i in range(0, len(X), 8)]


def trainer() -> Loop:
    model = (
        ax.input("x", shape=(None, 6))
        .dense(16, activation="relu")
        .dropout(rate=0.2, seed=11)
        .dense(3, activation="softmax")
    )
    return Loop.trainer(model, "categorical_cross_entropy", optimizers.adam(5e-3), log=0, seed=3)


def straight() -> ModelState:
    return trainer().run(batches, epochs=EPOCHS, progress=False)


def latest_checkpoint(directory: Path) -> Path:
    """The checkpoint of the latest epoch (names checkpoint_{epoch}_{iteration}.ckpt)."""
    found = [
        (int(m.group(1)), p)
        for p in directory.iterdir()
        if (m := re.fullmatch(r"checkpoint_(\d+)_\d+\.ckpt", p.name))
    ]
    return max(found)[1]


def main(mode: str, directory: Path) -> None:
    if mode == "train":
        loop = (
            trainer()
            .checkpoint(path=directory)
            .handle("iteration_completed", lambda s: (time.sleep(0.05), ("continue", s))[1])
        )
        loop.run(batches, epochs=EPOCHS, progress=False)
    else:
        state = deserialize_state(latest_checkpoint(directory).read_bytes())
        remaining = EPOCHS - (state.epoch + 1)
        final = trainer().from_state(state).run(batches, epochs=remaining, progress=False)
        save_file(final.flatten(), str(directory / "final.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
