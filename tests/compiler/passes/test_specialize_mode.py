"""specialize_mode: dropout-family layers are identities in inference mode and go away."""

import pytest

import axonc as ax
from tests.pass_numerics import check_ir_passes, random_state

SPECIALIZE = ["specialize_mode", "dead_node_elimination"]


@pytest.mark.parametrize(
    "layer", [ax.dropout, ax.alpha_dropout, ax.spatial_dropout, ax.feature_alpha_dropout]
)
def test_dropouts_are_removed_in_inference(layer):
    x = ax.input("x", (None, 4, 3))
    model = ax.relu(layer(x, rate=0.5, seed=1))
    new, _, changed = check_ir_passes(model, random_state(model), SPECIALIZE)
    assert changed
    assert sorted(n.op for n in new.nodes.values()) == ["input", "relu"]


def test_the_pass_does_not_run_in_train_mode():
    from axonc.passes.manager import pipeline

    cleanup, once = pipeline("onnx", "train", 2)
    assert "specialize_mode" not in {p.name for p in cleanup + once}
