"""ax.display.as_table: rows per layer, shapes, parameter shapes, hand-counted totals."""

from __future__ import annotations

import numpy as np

import axonc as ax


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
