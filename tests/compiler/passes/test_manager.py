"""The pass manager: pipelines by level/stage/mode, reports, verify-each, dumps, linear time."""

import networkx as nx
import numpy as np
import onnx
import pytest

import axonc as ax
from axonc.passes import PASSES, PassReport, optimize, optimize_onnx
from axonc.passes.graph import to_nx
from axonc.passes.manager import Pass, PassError, pipeline, register_pass
from axonc.to_onnx.export import to_onnx
from tests import onnx_run
from tests.pass_numerics import assert_ir_numerics_kept, random_inputs, random_state

IR_CLEANUP = {
    "specialize_mode",
    "dead_node_elimination",
    "common_subexpression_elimination",
    "constant_folding",
}


def names(passes):
    return {p.name for p in passes}


def test_o0_runs_verification_only():
    cleanup, once = pipeline("onnx", "inference", 0)
    assert cleanup == [] and names(once) == {"verify"}
    assert pipeline("onnx", "inference", 0, "onnx") == ([], [])


def test_o1_runs_the_cleanup_passes_and_o2_everything():
    cleanup, once = pipeline("onnx", "inference", 1)
    assert names(cleanup) == IR_CLEANUP and names(once) == {"verify"}
    cleanup, once = pipeline("onnx", "inference", 2)
    assert names(once) == {"verify", "fold_batch_norm"}
    cleanup, once = pipeline("onnx", "inference", 2, "onnx")
    assert names(cleanup) == {
        "fold_constants_onnx",
        "dead_value_elimination_onnx",
        "inline_output_identities",
        "simplify_algebra_onnx",
    }
    assert names(once) == {"cancel_transposes", "fuse_matmul_add"}
    cleanup, _ = pipeline("onnx", "train", 2, "onnx")
    assert {"simplify_algebra_onnx", "reassociate_updates_onnx"} <= names(cleanup)


def test_train_mode_skips_inference_only_passes():
    cleanup, once = pipeline("onnx", "train", 2)
    assert "specialize_mode" not in names(cleanup)
    assert "fold_batch_norm" not in names(once)


def test_a_pass_registers_for_a_known_stage_only():
    with pytest.raises(TypeError, match="stage"):
        register_pass("nowhere", level=1, stage="tflite-ish")


def _mixed_model():
    x = ax.input("x", (None, 6, 6, 2))
    y = ax.conv(x, 4, kernel_size=3, padding="same")
    y = ax.batch_norm(y)
    y = ax.relu(y)
    y = ax.dropout(y, rate=0.3, seed=2)
    y = ax.max_pool(y, kernel_size=2)
    y = ax.flatten(y)
    y = ax.dense(y, 5)
    c = ax.add(ax.constant(np.ones(5, np.float32)), ax.constant(np.ones(5, np.float32)))
    return ax.add(ax.relu(y), ax.multiply(ax.relu(y), c))


@pytest.mark.parametrize("mode", ["inference", "train"])
@pytest.mark.parametrize("level", [0, 1, 2])
def test_optimize_keeps_the_reference_numerics(mode, level):
    model = _mixed_model()
    state = random_state(model, mode)
    report = PassReport()
    after = optimize(model, state, mode=mode, level=level, verify_each=True, report=report)
    assert_ir_numerics_kept((model, state), after, mode)
    if level == 2 and mode == "inference":
        assert {n.op for n in after[0].nodes.values()}.isdisjoint({"batch_norm", "dropout"})
        assert report.changes["fold_batch_norm"] == 1


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_exported_models_agree_at_every_level(mode):
    model = _mixed_model()
    state = random_state(model, mode)
    _, predict = ax.build(model, mode=mode, compiler="reference")
    for level in (0, 1, 2):
        m = to_onnx(model, state, mode=mode, opt_level=level, verify_each=True)
        sess = onnx_run.session(m)
        for batch in (1, 3):
            feeds = random_inputs(model, batch, seed=batch)
            got, _ = onnx_run.run(m, sess, feeds, state.data, batch)
            expected = predict(state, feeds)
            expected = expected["prediction"] if mode == "train" else expected
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_layer_names_survive_removing_nodes():
    x = ax.input("x", (None, 4))
    first = ax.batch_norm(ax.dense(x, 3))  # folds away at -O2
    model = ax.batch_norm(ax.relu(first))  # stays, still named batch_norm_1
    state = random_state(model)
    m = to_onnx(model, state)
    assert {t.name for t in m.graph.initializer} >= {"batch_norm_1/mean", "dense_0/kernel"}
    assert not any(t.name.startswith("batch_norm_0/") for t in m.graph.initializer)


def test_the_report_times_every_pass_run():
    report = PassReport()
    to_onnx(_mixed_model(), random_state(_mixed_model()), report=report)
    for name in ("verify", "fold_batch_norm", "constant_folding", "cancel_transposes"):
        assert report.runs[name] >= 1
        assert report.seconds[name] >= 0.0
    assert report.runs["dead_node_elimination"] >= 2  # the fixpoint ends with a quiet round
    table = report.table()
    assert "fold_batch_norm" in table and "cancel_transposes" in table


def test_dump_after_gives_the_graph_as_text_for_both_stages():
    dumps = {}
    model = _mixed_model()
    to_onnx(
        model,
        random_state(model),
        dump_after={"fold_batch_norm", "cancel_transposes"},
        dump=lambda name, text: dumps.setdefault(name, text),
    )
    assert "conv" in dumps["fold_batch_norm"] and "batch_norm" not in dumps["fold_batch_norm"]
    parsed = onnx.parser.parse_model(dumps["cancel_transposes"])
    assert [n.op_type for n in parsed.graph.node].count("Conv") == 1


def test_verify_each_names_a_pass_that_breaks_the_graph(monkeypatch):
    def breaks(g: nx.DiGraph) -> bool:
        nid = next(iter(g.nodes))
        g.add_edge(nid, nid)
        return True

    monkeypatch.setitem(PASSES, "breaks", Pass("breaks", breaks, 1))
    model = ax.relu(ax.input("x", (None, 2)))
    with pytest.raises(PassError, match="after pass 'breaks'"):
        optimize(model, random_state(model), mode="inference", level=1, verify_each=True)


def test_verify_each_checks_the_onnx_stage_with_the_onnx_checker(monkeypatch):
    def breaks(g: nx.DiGraph) -> bool:
        g.graph["outputs"] = {"nowhere"}
        g.graph["model"].graph.output[0].name = "nowhere"
        return True

    monkeypatch.setitem(PASSES, "breaks", Pass("breaks", breaks, 1, stage="onnx"))
    model = ax.relu(ax.input("x", (None, 2)))
    m = to_onnx(model, random_state(model), opt_level=0)
    with pytest.raises(PassError, match="after pass 'breaks'"):
        optimize_onnx(m, 1, verify_each=True)


def test_the_numerics_check_catches_a_pass_that_changes_values():
    x = ax.input("x", (None, 3))
    model = ax.relu(x)
    changed = ax.tanh(x)
    state = random_state(model)
    with pytest.raises(AssertionError):
        assert_ir_numerics_kept((model, state), (changed, state), "inference")


def test_optimize_onnx_keeps_the_interface_and_metadata():
    model = _mixed_model()
    m = to_onnx(model, random_state(model), opt_level=0)
    new = optimize_onnx(m, 2)
    assert [i.name for i in new.graph.input] == [i.name for i in m.graph.input]
    assert [o.name for o in new.graph.output] == [o.name for o in m.graph.output]
    assert list(new.metadata_props) == list(m.metadata_props)
    assert len(new.graph.node) < len(m.graph.node)


def _chain(layers: int):
    y = ax.input("x", (None, 4))
    for _ in range(layers // 2):
        y = ax.relu(ax.dense(y, 4))
    return y


def test_to_nx_pins_generated_names():
    model = ax.relu(ax.dense(ax.input("x", (None, 2)), 2))
    g = to_nx(model, random_state(model), mode="inference", target="onnx")
    assert sorted(d["node"].name for _, d in g.nodes(data=True)) == ["dense_0", "relu_0", "x"]
