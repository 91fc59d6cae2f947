"""ax.display: as_table (rows per layer, shapes, parameter shapes, hand-counted totals) and
as_graph (the Mermaid text Axon 0.8.1's guides print)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import axonc as ax
from axonc.errors import OptionError


def _model():
    x = ax.input("x", (None, 8))
    h = x.dense(16, activation="relu").batch_norm().dropout(rate=0.3, seed=0)
    return h.dense(4, name="head")


def _row(table: str, layer: str) -> str:
    """The row of `layer` given as "name (op)"; rows read `name ( op["parent"] )` as in Axon."""
    name, op = layer[:-1].split(" (")
    (line,) = [ln for ln in table.splitlines() if ln.startswith(f"| {name} ( {op}")]
    return line


class TestAsTable:
    def test_every_layer_has_a_row(self):
        table = ax.display.as_table(_model(), ax.template((2, 8)))
        for layer in (
            "x (input)",
            "dense_0 (dense)",
            "relu_0 (relu)",
            "batch_norm_0 (batch_norm)",
            "dropout_0 (dropout)",
            "head (dense)",
        ):
            assert _row(table, layer)
        assert "Layer" in table.splitlines()[1] and "Parameters" in table.splitlines()[1]
        assert _row(table, "relu_0 (relu)").startswith('| relu_0 ( relu["dense_0"] ) ')
        assert _row(table, "x (input)").startswith("| x ( input ) ")

    def test_rows_show_shapes_options_and_parameter_shapes(self):
        table = ax.display.as_table(_model(), ax.template((2, 8)))
        dense = _row(table, "dense_0 (dense)")
        assert "{2, 8}" in dense and "{2, 16}" in dense
        assert "units: 16" in dense
        assert "kernel: f32[8][16]" in dense and "bias: f32[16]" in dense
        bn = _row(table, "batch_norm_0 (batch_norm)")
        for p in ("gamma", "beta", "mean", "var"):
            assert f"{p}: f32[16]" in bn
        assert "rate: 0.3" in _row(table, "dropout_0 (dropout)")
        head = _row(table, "head (dense)")
        assert "kernel: f32[16][4]" in head and "{2, 4}" in head

    def test_total_parameter_count_is_the_hand_count(self):
        # dense_0: 8*16 + 16 = 144; batch_norm_0: gamma, beta, mean, var of 16 = 64;
        # dropout: nothing in inference; head: 16*4 + 4 = 68.
        total = 144 + 64 + 68
        table = ax.display.as_table(_model(), ax.template((2, 8)))
        assert table.splitlines()[-1] == f"Total parameters: {total} ({total * 4} bytes)"

    def test_train_mode_counts_the_dropout_key(self):
        table = ax.display.as_table(_model(), ax.template((2, 8)), mode="train")
        assert "key: u32[2]" in _row(table, "dropout_0 (dropout)")
        total = 144 + 64 + 68 + 2
        assert table.splitlines()[-1] == f"Total parameters: {total} ({276 * 4 + 2 * 4} bytes)"

    def test_total_agrees_with_init(self):
        init, _ = ax.build(_model())
        state = init(ax.template((2, 8)))
        n = sum(v.size for layer in state.data.values() for v in layer.values())
        table = ax.display.as_table(_model(), ax.template((2, 8)))
        assert f"Total parameters: {n} " in table

    def test_dynamic_dims_show_as_nil(self):
        table = ax.display.as_table(_model(), ax.template((None, 8)))
        assert "{nil, 16}" in _row(table, "dense_0 (dense)")

    def test_a_shared_block_is_counted_once(self):
        x = ax.input("x", (None, 3))
        shared = ax.block(lambda h: h.dense(4))
        table = ax.display.as_table(ax.add(shared(x), shared(x)), ax.template((1, 3)))
        assert table.splitlines()[-1].startswith(f"Total parameters: {3 * 4 + 4} ")
        assert "dense_0.kernel: f32[3][4]" in table

    def test_container_outputs_and_constants(self):
        x = ax.input("x", (None, 3))
        c = ax.constant(np.ones((1, 3), np.float32))
        table = ax.display.as_table(ax.container((ax.add(x, c), x.dense(2))), ax.template((5, 3)))
        assert "{{5, 3}, {5, 2}}" in _row(table, "container_0 (container)")
        assert "tensor[1, 3]" in _row(table, "constant_0 (constant)")
        assert table.splitlines()[-1].startswith("Total parameters: 8 ")

    def test_columns_are_aligned(self):
        lines = ax.display.as_table(_model(), ax.template((2, 8))).splitlines()[:-1]
        assert len({len(ln) for ln in lines}) == 1


# ---- as_graph: the flowcharts Axon 0.8.1's guides print --------------------------------------


def _renumber(axon_text: str) -> str:
    """Axon's printed flowchart with its internal node ids renumbered from 0."""
    ids = [int(m) for m in re.findall(r"^(\d+)\[", axon_text, flags=re.M)]
    offset = min(ids)
    return re.sub(
        r"^(\d+)(\[| --> )(\d+)?",
        lambda m: f"{int(m[1]) - offset}{m[2]}{'' if m[3] is None else int(m[3]) - offset}",
        axon_text,
        flags=re.M,
    )


# guides/model_creation/your_first_axon_model.livemd
AXON_INPUT_ONLY = """graph TD;
3[/"data (:input) {2, 8}"/];
;"""

# guides/model_creation/sequential_models.livemd
AXON_SEQUENTIAL = """graph TD;
3[/"data (:input) {2, 16}"/];
4["dense_0 (:dense) {2, 32}"];
5["relu_0 (:relu) {2, 32}"];
6["dropout_0 (:dropout) {2, 32}"];
7["dense_1 (:dense) {2, 1}"];
8["softmax_0 (:softmax) {2, 1}"];
7 --> 8;
6 --> 7;
5 --> 6;
4 --> 5;
3 --> 4;"""

# guides/model_creation/complex_models.livemd (first model)
AXON_BRANCHES = """graph TD;
3[/"data (:input) {2, 8}"/];
4["dense_0 (:dense) {2, 32}"];
5["dense_1 (:dense) {2, 64}"];
6["relu_0 (:relu) {2, 64}"];
7["dense_2 (:dense) {2, 32}"];
8["container_0 (:container) {{2, 32}, {2, 32}}"];
9["add_0 (:add) {2, 32}"];
8 --> 9;
7 --> 8;
4 --> 8;
6 --> 7;
5 --> 6;
3 --> 5;
3 --> 4;"""

# guides/model_creation/complex_models.livemd (MyModel)
AXON_RESIDUAL = """graph TD;
10[/"data (:input) {1, 28, 28, 3}"/];
11["conv_0 (:conv) {1, 28, 28, 3}"];
12["mish_0 (:mish) {1, 28, 28, 3}"];
13["container_0 (:container) {{1, 28, 28, 3}, {1, 28, 28, 3}}"];
14["add_0 (:add) {1, 28, 28, 3}"];
15["max_pool_0 (:max_pool) {1, 14, 14, 3}"];
16["flatten_0 (:flatten) {1, 588}"];
17["dense_0 (:dense) {1, 32}"];
18["relu_0 (:relu) {1, 32}"];
19["dense_1 (:dense) {1, 32}"];
20["relu_1 (:relu) {1, 32}"];
21["dense_2 (:dense) {1, 1}"];
20 --> 21;
19 --> 20;
18 --> 19;
17 --> 18;
16 --> 17;
15 --> 16;
14 --> 15;
13 --> 14;
10 --> 13;
12 --> 13;
11 --> 12;
10 --> 11;"""

# guides/model_creation/multi_input_multi_output_models.livemd
AXON_TWO_INPUTS = """graph TD;
3[/"input_1 (:input) {2, 8}"/];
4[/"input_2 (:input) {2, 8}"/];
5["container_0 (:container) {{2, 8}, {2, 8}}"];
6["add_0 (:add) {2, 8}"];
5 --> 6;
4 --> 5;
3 --> 5;"""

AXON_TWO_OUTPUTS = """graph TD;
7[/"data (:input) {2, 8}"/];
8["dense_0 (:dense) {2, 32}"];
9["relu_0 (:relu) {2, 32}"];
10["dense_1 (:dense) {2, 64}"];
11["relu_1 (:relu) {2, 64}"];
12["container_0 (:container) {{2, 32}, {2, 64}}"];
11 --> 12;
9 --> 12;
10 --> 11;
7 --> 10;
8 --> 9;
7 --> 8;"""


def _residual_model():
    x = ax.input("data")
    conv = x.conv(3, padding="same").mish()
    block = ax.add(conv, x).max_pool(kernel_size=(2, 2))
    return block.flatten().dense(32).relu().dense(32).relu().dense(1)


class TestAsGraph:
    def test_an_input_alone_is_one_node_and_no_edges(self):
        got = ax.display.as_graph(ax.input("data"), ax.template((2, 8), "f32"))
        assert got == _renumber(AXON_INPUT_ONLY)

    def test_a_sequential_model(self):
        model = (
            ax.input("data")
            .dense(32)
            .activation("relu")
            .dropout(rate=0.5)
            .dense(1)
            .activation("softmax")
        )
        assert ax.display.as_graph(model, ax.template((2, 16))) == _renumber(AXON_SEQUENTIAL)

    def test_branches_merged_by_add_go_through_axons_container_node(self):
        x = ax.input("data")
        out = ax.add(x.dense(32), x.dense(64).relu().dense(32))
        assert ax.display.as_graph(out, ax.template((2, 8))) == _renumber(AXON_BRANCHES)

    def test_a_residual_block(self):
        got = ax.display.as_graph(_residual_model(), ax.template((1, 28, 28, 3)))
        assert got == _renumber(AXON_RESIDUAL)

    def test_two_inputs_and_two_outputs(self):
        out = ax.add(ax.input("input_1"), ax.input("input_2"))
        templates = {"input_1": ax.template((2, 8)), "input_2": ax.template((2, 8))}
        assert ax.display.as_graph(out, templates) == _renumber(AXON_TWO_INPUTS)
        x = ax.input("data")
        out = ax.container((x.dense(32).relu(), x.dense(64).relu()))
        assert ax.display.as_graph(out, ax.template((2, 8))) == _renumber(AXON_TWO_OUTPUTS)

    def test_custom_layers_show_their_op_name_and_name(self):
        # guides/model_creation/custom_layers.livemd
        x = ax.input("data")
        template = ax.template((2, 8))
        cases = [
            ({}, '4["custom_0 (:custom) {2, 8}"];'),
            ({"op_name": "my_layer"}, '5["my_layer_0 (:my_layer) {2, 8}"];'),
            ({"op_name": "my_layer", "name": "layer"}, '6["layer (:my_layer) {2, 8}"];'),
        ]
        for options, axon_node in cases:
            out = ax.layer(lambda t, **opts: t * 2, [x], **options)
            axon_id = axon_node.split("[")[0]
            axon_text = "\n".join(
                [
                    "graph TD;",
                    '3[/"data (:input) {2, 8}"/];',
                    axon_node,
                    f"3 --> {axon_id};",
                ]
            )
            want = _renumber(
                axon_text.replace(f"{axon_id}[", "4[").replace(f"> {axon_id};", "> 4;")
            )
            assert ax.display.as_graph(out, template) == want

    def test_left_right_direction_and_a_bad_direction(self):
        model = ax.input("data").dense(2)
        got = ax.display.as_graph(model, ax.template((2, 8)), direction="left_right")
        assert got.splitlines()[0] == "graph LR;"
        with pytest.raises(OptionError, match=r"valid direction.*'sideways'"):
            ax.display.as_graph(model, ax.template((2, 8)), direction="sideways")

    def test_notebooks_render_it_as_a_mermaid_diagram(self):
        got = ax.display.as_graph(ax.input("data").dense(2), ax.template((None, 8)))
        assert isinstance(got, str)
        assert got._repr_markdown_() == f"```mermaid\n{got}\n```"
        assert '["dense_0 (:dense) {nil, 2}"]' in got
