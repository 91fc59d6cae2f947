"""The anchor for bench/train.py: a hand-written minimal ONNX train step for an MLP.

What a person writing the step by hand would write: Gemm forward with relu,
LogSoftmax cross-entropy on the logits against a one-hot target, the backward pass
derived by hand (dlogits = (softmax - target) / B, Gemm with transA/transB for the
weight and input gradients, ReduceSum for the biases, a relu mask by Where), and the
optimizer update as the fewest element-wise ops per parameter, bias corrections as
scalars. Inputs and outputs use the names of axonc's exported step (spec/training.md),
so the same feeds drive both graphs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Graph:
    """A small builder: nodes, initializers and fresh value names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: object) -> str:
        self.n += 1
        name = out or f"v{self.n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], f"n{self.n}", **attrs))
        return name

    def const(self, value: object, dtype: object = np.float32) -> str:
        self.n += 1
        name = f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name


def minimal_mlp_step(
    sizes: list[int],
    kind: str,
    *,
    lr: float,
    momentum: float = 0.9,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """(the step model, output name -> the input it feeds next step) for dense layers `sizes`."""
    g = _Graph()
    layers = [f"dense_{i}" for i in range(len(sizes) - 1)]
    f32 = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("x", f32, ["batch", sizes[0]]),
        helper.make_tensor_value_info("target", f32, ["batch", sizes[-1]]),
    ]
    params: dict[str, tuple[int, ...]] = {}
    for name, n_in, n_out in zip(layers, sizes, sizes[1:], strict=False):
        params[f"{name}/kernel"] = (n_in, n_out)
        params[f"{name}/bias"] = (n_out,)
    slots = ["trace"] if kind == "sgd" else ["mu", "nu"]
    state = {f"__optimizer__/{s}/{p}": shape for s in slots for p, shape in params.items()}
    for name, shape in {**params, **state}.items():
        inputs.append(helper.make_tensor_value_info(name, f32, list(shape)))
    if kind == "adam":
        inputs.append(helper.make_tensor_value_info("__optimizer__/count", TensorProto.INT32, []))

    # forward
    acts, pre = ["x"], []
    h = "x"
    for i, name in enumerate(layers):
        z = g.op("Gemm", h, f"{name}/kernel", f"{name}/bias")
        pre.append(z)
        h = z if i == len(layers) - 1 else g.op("Relu", z)
        acts.append(h)
    logp = g.op("LogSoftmax", h, axis=1)
    batch = g.op("Cast", g.op("Shape", "x", start=0, end=1), to=f32)
    inv_b = g.op("Reciprocal", batch)
    picked = g.op("ReduceSum", g.op("Mul", "target", logp), g.const([1], np.int64), keepdims=0)
    loss = g.op("Neg", g.op("ReduceMean", picked, keepdims=0), out="loss")
    outputs = [loss]

    # backward: dlogits = (softmax - target) / B
    dz = g.op("Mul", g.op("Sub", g.op("Exp", logp), "target"), inv_b)
    axis0 = g.const([0], np.int64)
    zero = g.const(0.0)
    grads: dict[str, str] = {}
    for i in reversed(range(len(layers))):
        name = layers[i]
        grads[f"{name}/kernel"] = g.op("Gemm", acts[i], dz, transA=1)
        grads[f"{name}/bias"] = g.op("ReduceSum", dz, axis0, keepdims=0)
        if i:
            da = g.op("Gemm", dz, f"{name}/kernel", transB=1)
            dz = g.op("Where", g.op("Greater", pre[i - 1], zero), da, zero)

    # update
    feedback: dict[str, str] = {}

    renames: dict[str, str] = {}

    def emit(value: str, name: str) -> None:
        """Make `value` the graph output for `name` (renamed below: no Identity copy)."""
        renames[value] = f"new/{name}"
        outputs.append(f"new/{name}")
        feedback[f"new/{name}"] = name

    if kind == "sgd":
        mom, neg_lr = g.const(momentum), g.const(-lr)
        for p, grad in grads.items():
            t = g.op("Add", g.op("Mul", f"__optimizer__/trace/{p}", mom), grad)
            emit(t, f"__optimizer__/trace/{p}")
            emit(g.op("Add", p, g.op("Mul", t, neg_lr)), p)
    else:
        count = g.op("Add", "__optimizer__/count", g.const(1, np.int32))
        emit(count, "__optimizer__/count")
        t1 = g.op("Cast", count, to=f32)
        one = g.const(1.0)
        # step = -lr / (1 - b1^t);  root = 1 / sqrt(1 - b2^t)
        step = g.op("Div", g.const(-lr), g.op("Sub", one, g.op("Pow", g.const(b1), t1)))
        root = g.op("Reciprocal", g.op("Sqrt", g.op("Sub", one, g.op("Pow", g.const(b2), t1))))
        cb1, c1b1 = g.const(b1), g.const(1 - b1)
        cb2, c1b2, ceps = g.const(b2), g.const(1 - b2), g.const(eps)
        for p, grad in grads.items():
            mu = g.op("Add", g.op("Mul", f"__optimizer__/mu/{p}", cb1), g.op("Mul", grad, c1b1))
            sq = g.op("Mul", grad, grad)
            nu = g.op("Add", g.op("Mul", f"__optimizer__/nu/{p}", cb2), g.op("Mul", sq, c1b2))
            denom = g.op("Add", g.op("Mul", g.op("Sqrt", nu), root), ceps)
            emit(mu, f"__optimizer__/mu/{p}")
            emit(nu, f"__optimizer__/nu/{p}")
            emit(g.op("Add", p, g.op("Mul", g.op("Div", mu, denom), step)), p)

    for n in g.nodes:
        n.input[:] = [renames.get(i, i) for i in n.input]
        n.output[:] = [renames.get(o, o) for o in n.output]
    shapes = {**params, **state, "__optimizer__/count": ()}
    outs = [helper.make_tensor_value_info("loss", f32, [])]
    for o in outputs[1:]:
        shape = list(shapes[feedback[o]])
        dtype = TensorProto.INT32 if feedback[o].endswith("count") else f32
        outs.append(helper.make_tensor_value_info(o, dtype, shape))
    graph = helper.make_graph(g.nodes, "minimal_step", inputs, outs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model, feedback
