"""Post-training quantization of an exported float .tflite with Google's ai-edge-quantizer.

- "float16": weights stored as f16 and dequantized in the graph (FLOAT_CASTING);
- "dynamic-int8": int8 per-channel weights, activations quantized on the fly;
- "int8": full-integer int8 from calibration data: per-channel symmetric weights,
  per-tensor asymmetric activations, int32 biases (the quantizer's
  static_wi8_ai8 recipe). The quantizer gives the model an int8 interface;
  unless `int8_interface` is asked for, a QUANTIZE is put in front of every
  input and a DEQUANTIZE behind every output so callers keep passing floats.

The calibration data is any iterable of input batches (an array for a
one-input model, or a dict by input name). Every activation's range is the
global min/max over all samples, as TensorFlow's converter takes it: the
quantizer's own calibration keeps a moving average of per-call ranges, which
clips the tails (a sample's outlier weighs 5%) and made int8 outputs 10-20x
less accurate. So samples are regrouped into chunks of `CHUNK` (a batch the
interpreter runs at once, bounding memory), each chunk is calibrated alone and
the ranges are merged here.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..errors import InputError, OptionError
from .builder import repack
from .schema import schema

CHUNK = 64  # samples per calibration call


def quantize_model(
    data: bytes,
    mode: str,
    calibration: Iterable[Any] | None,
    input_names: list[str],
    int8_interface: bool = False,
) -> bytes:
    """The quantized model's bytes (see module doc)."""
    with contextlib.redirect_stdout(io.StringIO()):  # the quantizer prints size reports
        return _quantize(data, mode, calibration, input_names, int8_interface)


def _quantize(
    data: bytes,
    mode: str,
    calibration: Iterable[Any] | None,
    input_names: list[str],
    int8_interface: bool,
) -> bytes:
    qt = _quantizer_module()
    q = qt.quantizer.Quantizer(bytearray(data))
    names = qt.qtyping.TFLOperationName
    if mode == "float16":
        q.add_weight_only_config(
            regex=".*",
            operation_name=names.ALL_SUPPORTED,
            num_bits=16,
            algorithm_key=qt.algorithm_manager.AlgorithmName.FLOAT_CASTING,
        )
    elif mode == "dynamic-int8":
        q.load_quantization_recipe(qt.recipe.dynamic_wi8_afp32())
    else:
        q.load_quantization_recipe(qt.recipe.static_wi8_ai8())
    if mode == "int8":
        result = _calibrate(q, _chunks(_samples(calibration, input_names), CHUNK))
        out = bytes(q.quantize(result).quantized_model)
        return repack(out, None if int8_interface else _float_interface)
    return repack(bytes(q.quantize().quantized_model))


def _calibrate(q: Any, chunks: Iterable[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Each tensor's min/max over every chunk (see the module doc)."""
    merged: dict[str, Any] = {}
    for chunk in chunks:
        for name, qsv in q.calibrate({"serving_default": [chunk]}).items():
            old = merged.get(name)
            merged[name] = qsv if old is None else _widen(old, qsv)
    if not merged:
        raise OptionError("the calibration data holds no samples")
    return merged


def _widen(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A range covering both ranges (other statistics are kept from the first)."""
    return {
        **old,
        "min": np.minimum(old["min"], new["min"]),
        "max": np.maximum(old["max"], new["max"]),
    }


def _chunks(samples: Iterable[dict[str, np.ndarray]], size: int):
    """Samples of batch 1 regrouped into batches of at most `size`."""
    group: list[dict[str, np.ndarray]] = []
    for sample in samples:
        group.append(sample)
        if len(group) == size:
            yield _stack(group)
            group = []
    if group:
        yield _stack(group)


def _stack(group: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {n: np.concatenate([g[n] for g in group]) for n in group[0]}


def _quantizer_module() -> Any:
    """The ai_edge_quantizer submodules used here, as one namespace."""
    try:
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe
    except ImportError:
        raise OptionError(
            "quantization needs ai-edge-quantizer: pip install 'axonc[tflite]'"
        ) from None
    return SimpleNamespace(
        algorithm_manager=algorithm_manager, qtyping=qtyping, quantizer=quantizer, recipe=recipe
    )


def _samples(calibration: Iterable[Any], input_names: list[str]):
    """One {input: f32 array of batch 1} per sample of every batch."""
    for k, batch in enumerate(calibration):
        if not isinstance(batch, Mapping):
            if len(input_names) != 1:
                raise InputError(
                    f"calibration batch {k}: the model has inputs {', '.join(input_names)}; "
                    "give each batch as a dict by input name"
                )
            batch = {input_names[0]: batch}
        missing = sorted(set(input_names) - set(batch))
        if missing:
            raise InputError(f"calibration batch {k} lacks input(s) {', '.join(missing)}")
        arrays = {n: np.asarray(batch[n]) for n in input_names}
        sizes = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
        if len(sizes) != 1 or 0 in sizes:
            raise InputError(
                f"calibration batch {k}: every input needs the same non-zero batch size, "
                f"got {sorted(sizes)}"
            )
        for i in range(sizes.pop()):
            yield {n: a[i : i + 1].astype(np.float32) for n, a in arrays.items()}


def _float_interface(model: Any) -> None:
    """Give an int8-interface model float32 inputs/outputs: QUANTIZE in, DEQUANTIZE out.

    The new float tensors take the signature names; the int8 tensors keep their
    quantization parameters and become internal.
    """
    s = schema()
    sub = model.subgraphs[0]
    codes = {}

    def opcode(name: str) -> int:
        if name not in codes:
            code = getattr(s.BuiltinOperator, name)
            for i, oc in enumerate(model.operatorCodes):
                if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
                    codes[name] = i
                    break
            else:
                oc = s.OperatorCodeT()
                oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
                model.operatorCodes.append(oc)
                codes[name] = len(model.operatorCodes) - 1
        return codes[name]

    def float_twin(index: int) -> int:
        old = sub.tensors[index]
        t = s.TensorT()
        t.name, t.shape, t.shapeSignature = old.name, old.shape, old.shapeSignature
        t.type, t.buffer, t.hasRank = s.TensorType.FLOAT32, 0, True
        old.name = old.name + (b"/int8" if isinstance(old.name, bytes) else "/int8")
        sub.tensors.append(t)
        return len(sub.tensors) - 1

    remap: dict[int, int] = {}
    front, back = [], []
    for i in sub.inputs:
        if sub.tensors[i].type != s.TensorType.INT8:
            continue
        f = float_twin(i)
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode("QUANTIZE"), [f], [i]
        front.append(op)
        remap[i] = f
    for i in sub.outputs:
        if sub.tensors[i].type != s.TensorType.INT8:
            continue
        f = float_twin(i)
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode("DEQUANTIZE"), [i], [f]
        back.append(op)
        remap[i] = f
    sub.operators = front + list(sub.operators) + back
    sub.inputs = [remap.get(i, i) for i in sub.inputs]
    sub.outputs = [remap.get(i, i) for i in sub.outputs]
    for sig in model.signatureDefs or []:
        for tm in [*sig.inputs, *sig.outputs]:
            tm.tensorIndex = remap.get(tm.tensorIndex, tm.tensorIndex)
