"""The `axonc` command line: compile a model file to ONNX, inspect a model, run one.

Exit codes: 0 success; 1 a user error (bad arguments, missing or malformed
files, inputs that do not fit the model), reported as one line on stderr; 2 an
internal error (a bug in axonc). `--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import numpy as np

from .dtypes import TensorType
from .errors import AxoncError
from .shape_inference import input_nodes

# Commands import their backends (onnx, onnxruntime, LiteRT, matplotlib) when they run,
# so `axonc --help` and the light commands start without loading them.

EPILOG = (
    "Exit codes: 0 ok, 1 user error (one line on stderr), 2 internal error. "
    "Run 'axonc COMMAND --help' for a command's options."
)


class UserError(click.ClickException):
    """A problem with what the user asked for: one line on stderr, exit code 1."""


class _Settings:
    debug = False


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _user_errors() -> tuple[type[BaseException], ...]:
    from axonrt import AxonrtError  # axonrt loads onnxruntime: only once an error needs it

    return (AxoncError, AxonrtError, OSError)


class AxoncGroup(click.Group):
    """A click group that turns every failure into one line on stderr and an exit code."""

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        settings = _Settings()
        try:
            rv = super().main(
                args,
                prog_name or "axonc",
                complete_var,
                standalone_mode=False,
                obj=settings,
                **extra,
            )
        except click.ClickException as exc:
            if settings.debug and not isinstance(exc, click.UsageError):
                raise
            where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) else "axonc: "
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            click.echo(f"{where}error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(1)
        except click.exceptions.Abort as exc:  # click's form of Ctrl-C and end of input
            interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
            click.echo("axonc: interrupted" if interrupted else "axonc: aborted", err=True)
            sys.exit(130 if interrupted else 1)
        except Exception as exc:
            if settings.debug:
                raise
            if isinstance(exc, _user_errors()):
                click.echo(f"axonc: error: {_one_line(_describe(exc))}", err=True)
                sys.exit(1)
            click.echo(
                f"axonc: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
                "(a bug in axonc; rerun with --debug for the traceback)",
                err=True,
            )
            sys.exit(2)
        sys.exit(rv if isinstance(rv, int) else 0)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


@click.group(
    cls=AxoncGroup,
    invoke_without_command=True,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--debug", is_flag=True, help="Show the full traceback when a command fails.")
@click.version_option(package_name="axonc", prog_name="axonc")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Compile Axon-style models to ONNX, inspect them, and run them.

    \b
      axonc compile model.axon -o model.onnx
      axonc inspect model.onnx
      axonc run model.onnx --input x=batch.npy --output-dir out/
      axonc plot history.jsonl -o curves.png
    """
    ctx.obj.debug = debug
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


# ---- progress ------------------------------------------------------------------------------


class _Progress:
    """A spinner with the elapsed time on stderr, only when stderr is a terminal."""

    FRAMES = "|/-\\"

    def __init__(self, label: str):
        self.label = label
        self.enabled = sys.stderr.isatty()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = time.perf_counter()

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def _spin(self) -> None:
        i = 0
        while not self._stop.wait(0.1):
            elapsed = time.perf_counter() - self._start
            with self._lock:
                sys.stderr.write(f"\r{self.FRAMES[i % 4]} {self.label} ({elapsed:.1f}s)")
                sys.stderr.flush()
            i += 1

    def _clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")  # back to the line start, erase the spinner
            sys.stderr.flush()

    def echo(self, text: str) -> None:
        """Print to stdout without tangling with the spinner line."""
        with self._lock:
            self._clear()
            click.echo(text)

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            with self._lock:
                self._clear()


# ---- compile --------------------------------------------------------------------------------


@cli.command(epilog=EPILOG)
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the model (default: MODEL with the suffix .onnx, or .tflite for "
    "--target tflite).",
)
@click.option(
    "--target",
    type=click.Choice(["onnx", "tflite"]),
    default=None,
    help="What to compile to (default: from the output's suffix, else onnx).",
)
@click.option(
    "--quantize",
    type=click.Choice(["float16", "dynamic-int8", "int8"]),
    default=None,
    help="TFLite only: quantize the weights (float16, dynamic-int8) or everything (int8).",
)
@click.option(
    "--calibration",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="For --quantize int8: an .npz with one array per input, samples along axis 0.",
)
@click.option(
    "--int8-interface",
    is_flag=True,
    help="For --quantize int8: int8 inputs and outputs instead of float32 ones.",
)
@click.option(
    "--mode",
    type=click.Choice(["inference", "train"]),
    default="inference",
    show_default=True,
    help="Inference, or train (dropout active via noise inputs, updated state as outputs).",
)
@click.option(
    "-O",
    "opt_level",
    type=click.IntRange(0, 2),
    default=2,
    show_default=True,
    help="Optimisation level: 0 verification only, 1 cleanup passes, 2 everything.",
)
@click.option(
    "--opset",
    type=int,
    default=None,
    help="ONNX opset to target (default 17; up to the newest the installed onnx and "
    "onnxruntime support).",
)
@click.option(
    "--dump-after",
    "dump_after",
    multiple=True,
    metavar="PASS",
    help="Print the graph after this pass runs (repeatable).",
)
@click.option("--timings", is_flag=True, help="Print how long each pass took.")
@click.option("--verify-each", is_flag=True, help="Verify the graph after every pass.")
@click.option(
    "--template",
    "templates",
    multiple=True,
    metavar="[NAME=]DIMS[:DTYPE]",
    help="An input's shape and dtype for the export, e.g. x=1,784:f32 (the first dim is "
    "the batch, exported dynamic). Needed for inputs declared without a shape; "
    "repeat it per input.",
)
def compile(
    model: Path,
    output: Path | None,
    target: str | None,
    quantize: str | None,
    calibration: Path | None,
    int8_interface: bool,
    mode: str,
    opt_level: int,
    opset: int | None,
    dump_after: tuple[str, ...],
    timings: bool,
    verify_each: bool,
    templates: tuple[str, ...],
) -> None:
    """Compile an .axon model file to an ONNX or a TFLite model."""
    if target is None:
        target = "tflite" if output is not None and output.suffix.lower() == ".tflite" else "onnx"
    if target == "tflite":
        _compile_tflite(model, output, quantize, calibration, int8_interface, mode, opt_level)
        return
    if quantize or calibration or int8_interface:
        raise UserError("--quantize, --calibration and --int8-interface apply to --target tflite")
    from .passes import PASSES, PassReport
    from .passes.graph import describe
    from .to_onnx import export

    unknown = [p for p in dump_after if p not in PASSES]
    if unknown:
        raise UserError(
            f"unknown pass {unknown[0]!r} for --dump-after; passes: {', '.join(sorted(PASSES))}"
        )
    output = output or model.with_suffix(".onnx")
    if output.resolve() == model.resolve():
        raise UserError(f"the output {output} would overwrite the input model")
    if not output.parent.is_dir():
        raise UserError(f"cannot write {output}: directory {output.parent} does not exist")
    opset = export.DEFAULT_OPSET if opset is None else opset
    scheduled = {
        p.name
        for p in PASSES.values()
        if p.level <= opt_level and mode in p.modes and "onnx" in p.targets
    }
    for name in dump_after:
        if name not in scheduled:
            click.echo(
                f"note: pass {name!r} does not run at -O{opt_level} in {mode} mode", err=True
            )
    report = PassReport()
    start = time.perf_counter()
    with _Progress(f"compiling {model.name}") as progress:

        def dump(name: str, graph: Any) -> None:
            text = graph if isinstance(graph, str) else describe(graph)
            progress.echo(f"--- after {name} ---\n{text}")

        ir, state = _load_axon(model)
        onnx_model = export.export_onnx(
            ir,
            state,
            output,
            template=_parse_templates(ir, templates),
            mode=mode,
            opset=opset,
            opt_level=opt_level,
            verify_each=verify_each,
            dump_after=set(dump_after),
            dump=dump,
            report=report,
        )
    seconds = time.perf_counter() - start
    if timings:
        click.echo(report.table())
    click.echo(
        f"wrote {output} ({_size(output.stat().st_size)}; opset {opset}, {mode} mode, "
        f"{len(onnx_model.graph.node)} ONNX nodes) in {seconds:.2f}s"
    )


def _compile_tflite(
    model: Path,
    output: Path | None,
    quantize: str | None,
    calibration: Path | None,
    int8_interface: bool,
    mode: str,
    opt_level: int,
) -> None:
    from .to_tflite import export

    if mode != "inference":
        raise UserError("a TFLite model is compiled in inference mode; drop --mode train")
    if quantize == "int8" and calibration is None:
        raise UserError("--quantize int8 needs --calibration FILE.npz (sample inputs)")
    if calibration is not None and quantize != "int8":
        raise UserError("--calibration applies to --quantize int8")
    output = output or model.with_suffix(".tflite")
    if output.resolve() == model.resolve():
        raise UserError(f"the output {output} would overwrite the input model")
    if not output.parent.is_dir():
        raise UserError(f"cannot write {output}: directory {output.parent} does not exist")
    batches = None if calibration is None else _calibration_batches(calibration)
    start = time.perf_counter()
    with _Progress(f"compiling {model.name}"):
        ir, state = _load_axon(model)
        data = export.export_tflite(
            ir,
            state,
            output,
            quantize=quantize,
            calibration=batches,
            int8_interface=int8_interface,
            opt_level=opt_level,
        )
    seconds = time.perf_counter() - start
    click.echo(
        f"wrote {output} ({_size(len(data))}; TFLite, {quantize or 'float32'}) in {seconds:.2f}s"
    )


CALIBRATION_BATCH = 32


def _calibration_batches(path: Path) -> list[dict[str, np.ndarray]]:
    """An .npz of one array per input (samples along axis 0) as batches of 32 samples."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({_one_line(str(exc))})") from exc
    sizes = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
    if not arrays or len(sizes) != 1 or 0 in sizes:
        raise UserError(
            f"{path}: expected one array per input, all with the same number of samples "
            "along axis 0"
        )
    n = sizes.pop()
    return [
        {k: a[i : i + CALIBRATION_BATCH] for k, a in arrays.items()}
        for i in range(0, n, CALIBRATION_BATCH)
    ]


def _parse_templates(model: Any, specs: tuple[str, ...]) -> Any:
    """`--template` values as a template dict ({name: TensorType}); None when none given."""
    if not specs:
        return None
    names = list(input_nodes(model))
    out = {}
    for spec in specs:
        name, _, rest = spec.rpartition("=")
        if not name:
            if len(names) != 1:
                raise UserError(
                    f"--template {spec!r}: the model has inputs {', '.join(names)}; "
                    "say which, e.g. --template NAME=1,784:f32"
                )
            name = names[0]
        dims, _, dtype = rest.partition(":")
        try:
            shape = tuple(int(d) for d in dims.split(",") if d.strip())
            out[name] = TensorType(shape, dtype or "f32")
        except ValueError as exc:  # a bad number, dtype or shape
            raise UserError(
                f"--template {spec!r}: expected [NAME=]DIMS[:DTYPE] such as x=1,784:f32 ({exc})"
            ) from None
    return out


def _load_axon(path: Path) -> tuple[Any, Any]:
    """ax.load, with the file named in any format error."""
    from . import serialize

    try:
        return serialize.load(path)
    except AxoncError as exc:
        raise UserError(f"{path}: {_one_line(str(exc))}") from exc


def _size(n: int) -> str:
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


# ---- inspect --------------------------------------------------------------------------------


@cli.command(epilog=EPILOG)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def inspect(file: Path) -> None:
    """Describe an .axon model file, an .onnx or a .tflite model.

    For .axon: the layer table (batch 1) and parameter counts. For .onnx: IR
    version, opset, mode, inputs and outputs with dtypes and shapes, op counts.
    For .tflite: the signature, tensors with dtypes, shapes and quantization, op counts.
    """
    suffix = file.suffix.lower()
    if suffix == ".axon":
        _inspect_axon(file)
    elif suffix == ".onnx":
        _inspect_onnx(file)
    elif suffix == ".tflite":
        _inspect_tflite(file)
    else:
        raise UserError(
            f"{file}: unknown file type {suffix or '(no suffix)'!r}; inspect reads .axon, "
            ".onnx and .tflite"
        )


def _inspect_axon(file: Path) -> None:
    from .display import as_table

    model, state = _load_axon(file)
    click.echo(f"{file}: axonc model file")
    template = {}
    shapeless = []
    for name, node in input_nodes(model).items():
        shape, dtype = node.options["shape"], node.options["dtype"]
        if shape is None:
            if not node.options["optional"]:
                shapeless.append(name)
            continue
        dims = tuple(1 if i == 0 and d is None else d for i, d in enumerate(shape))
        template[name] = TensorType(dims, dtype or "f32")
        shown = ", ".join("nil" if d is None else str(d) for d in shape)
        typed = f"{dtype} " if dtype else ""
        click.echo(f"input {name!r}: {typed}{{{shown}}}")
    if shapeless:
        click.echo(
            f"no layer table: input(s) {', '.join(map(repr, shapeless))} declare no shape "
            "(give ax.input a shape)"
        )
    else:
        click.echo(as_table(model, template))
    arrays = state.flatten()
    n_state = sum(1 for p in state.paths() if p in state.state)
    values = sum(int(a.size) for a in arrays.values())
    nbytes = sum(int(np.asarray(a).nbytes) for a in arrays.values())
    click.echo(
        f"stored: {len(arrays) - n_state} parameter tensors, {n_state} state tensors, "
        f"{values} values ({_size(nbytes)})"
    )


def _onnx_shape(value_info: Any) -> str:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return "[?]"
    dims = [
        str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?"
        for d in tensor.shape.dim
    ]
    return "[" + ", ".join(dims) + "]"


def _onnx_dtype(value_info: Any) -> str:
    import onnx

    elem = value_info.type.tensor_type.elem_type
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem).name
    except (KeyError, ValueError, TypeError):
        return onnx.TensorProto.DataType.Name(elem).lower()


def _count_ops(graph: Any, counts: Counter) -> None:
    import onnx

    for node in graph.node:
        domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
        counts[domain + node.op_type] += 1
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _count_ops(attr.g, counts)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _count_ops(g, counts)


def _inspect_onnx(file: Path) -> None:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        m = onnx.load(os.fspath(file), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise UserError(f"{file}: not a valid ONNX model ({_one_line(str(exc))})") from exc
    if not m.graph.node and not m.graph.output:
        raise UserError(f"{file}: not a valid ONNX model (no graph)")
    meta = {p.key: p.value for p in m.metadata_props}
    opsets = ", ".join(
        f"{o.domain or 'ai.onnx'} {o.version}"
        for o in sorted(m.opset_import, key=lambda o: o.domain)
    )
    producer = m.producer_name or "unknown"
    click.echo(f"{file}: ONNX model by {producer}")
    click.echo(f"IR version: {m.ir_version}")
    click.echo(f"opset: {opsets}")
    click.echo(f"mode: {meta.get('axonc.mode', '- (no axonc metadata)')}")
    initializers = {t.name: t for t in m.graph.initializer}
    noise = _json_meta(meta, "axonc.noise_inputs", file)
    rows: list[tuple[str, list[Any]]] = [
        (
            "inputs",
            [i for i in m.graph.input if i.name not in initializers and i.name not in noise],
        ),
        ("noise inputs", [i for i in m.graph.input if i.name in noise]),
        ("state inputs", [i for i in m.graph.input if i.name in initializers]),
        ("outputs", list(m.graph.output)),
    ]
    for title, infos in rows:
        if not infos and title != "outputs" and title != "inputs":
            continue
        click.echo(f"{title}:")
        width = max((len(i.name) for i in infos), default=0)
        for i in infos:
            click.echo(f"  {i.name:<{width}}  {_onnx_dtype(i):<8} {_onnx_shape(i)}")
    if "axonc.outputs" in meta:
        click.echo(f"output structure: {meta['axonc.outputs']}")
    values = sum(math.prod(t.dims) for t in initializers.values())
    click.echo(f"initializers: {len(initializers)} tensors, {values} values")
    counts: Counter = Counter()
    _count_ops(m.graph, counts)
    click.echo(f"ops: {sum(counts.values())} nodes")
    width = max((len(k) for k in counts), default=0)
    for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        click.echo(f"  {op:<{width}}  {n}")


def _inspect_tflite(file: Path) -> None:
    from .to_tflite.inspect import describe

    try:
        text = describe(file.read_bytes())
    except ValueError as exc:
        raise UserError(f"{file}: {_one_line(str(exc))}") from exc
    click.echo(f"{file}: {text}")


def _json_meta(meta: dict[str, str], key: str, file: Path) -> Any:
    try:
        return json.loads(meta.get(key, "{}"))
    except ValueError:
        raise UserError(f"{file}: metadata {key!r} is not valid JSON") from None


# ---- run ------------------------------------------------------------------------------------


@cli.command(epilog=EPILOG)
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME=FILE.npy",
    help="An input array from a .npy file (repeatable); FILE.npy alone fills the inputs in order.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one .npy file per output here.",
)
@click.option("--seed", type=int, help="Seed for dropout noise of a train-mode model.")
@click.option(
    "--provider",
    "providers",
    multiple=True,
    help="Execution provider (cpu, cuda, tensorrt; repeatable). Default: the best available.",
)
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads.")
def run(
    model: Path,
    inputs: tuple[str, ...],
    output_dir: Path | None,
    seed: int | None,
    providers: tuple[str, ...],
    threads: int | None,
) -> None:
    """Run an ONNX or TFLite model on .npy inputs through axonrt and summarise the outputs."""
    import axonrt

    rt = axonrt.load(model, list(providers) or None, threads=threads)
    feeds: dict[str, Any] = {}
    positional = iter(rt.inputs)
    for spec in inputs:
        if "=" in spec:
            name, path = spec.split("=", 1)
        else:
            sig = next(positional, None)
            if sig is None:
                raise UserError(
                    f"--input {spec}: the model takes {len(rt.inputs)} input(s); "
                    "name the input as NAME=FILE.npy"
                )
            name, path = sig.name, spec
        if name in feeds:
            raise UserError(f"input {name!r} is given twice")
        feeds[name] = _load_npy(name, Path(path))
    missing_noise = [s.name for s in rt.noise_inputs if s.name not in feeds]
    if missing_noise and seed is None:
        names = ", ".join(map(repr, missing_noise))
        raise UserError(
            f"this train-mode model takes dropout noise input(s) {names}; "
            "give them with --input NAME=FILE.npy or pass --seed N to draw them"
        )
    results = rt.run(feeds, rng=seed)
    width = max(len(n) for n in results)
    for name, value in results.items():
        arr = np.asarray(value)
        click.echo(f"{name:<{width}}  {arr.dtype.name:<8} {list(arr.shape)!s:<14} {_summary(arr)}")
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for name, value in results.items():
            stem = _file_stem(name, used)
            target = output_dir / f"{stem}.npy"
            np.save(target, np.asarray(value), allow_pickle=False)
            click.echo(f"wrote {target}")


def _load_npy(name: str, path: Path) -> np.ndarray:
    """An input array from a .npy file, never unpickling; a bad file is a UserError."""
    if not path.is_file():
        raise UserError(f"input {name!r}: {path}: no such file")
    try:
        value = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(
            f"input {name!r}: {path} is not a readable .npy array ({_one_line(str(exc))})"
        ) from exc
    if not isinstance(value, np.ndarray):
        value.close()
        raise UserError(f"input {name!r}: {path} is an .npz archive; give one .npy per input")
    return value


def _summary(arr: np.ndarray) -> str:
    if arr.size == 0:
        return "empty"
    if arr.dtype.kind == "b":
        return f"true {int(arr.sum())} of {arr.size}"
    if arr.dtype.kind not in "iuf":
        return ""
    data = arr.astype(np.float64)
    finite = data[np.isfinite(data)]
    parts = []
    if finite.size:
        parts += [f"min {finite.min():.6g}", f"max {finite.max():.6g}", f"mean {finite.mean():.6g}"]
    bad = data.size - finite.size
    if bad:
        parts.append(f"non-finite {bad}")
    head = ", ".join(f"{v:.4g}" for v in data.ravel()[:4])
    parts.append(f"[{head}{', ...' if arr.size > 4 else ''}]")
    return "  ".join(parts)


def _file_stem(name: str, used: set[str]) -> str:
    """A safe, unique file name for an output ("state/dense_0/mean" -> "state.dense_0.mean")."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name.replace("/", ".")).strip(".") or "output"
    candidate, n = stem, 1
    while candidate in used:
        candidate, n = f"{stem}_{n}", n + 1
    used.add(candidate)
    return candidate


# ---- plot -----------------------------------------------------------------------------------


@cli.command(epilog=EPILOG)
@click.argument("history", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The image to write (default: HISTORY with the suffix .png).",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Plot only this metric, with its validation_ twin (repeatable).",
)
def plot(history: Path, output: Path | None, metrics: tuple[str, ...]) -> None:
    """Draw loss and metrics per epoch from a loop history (Loop.history JSON lines)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(
            "plot needs matplotlib, which is not installed: pip install 'axonc[plot]'"
        ) from None
    from .loop.plot import plot_history

    output = output or history.with_suffix(".png")
    if not output.parent.is_dir():
        raise UserError(f"cannot write {output}: directory {output.parent} does not exist")
    drawn = plot_history(history, output, metrics)
    click.echo(f"wrote {output} ({', '.join(drawn)})")


# ---- export-training-artifacts --------------------------------------------------------------


@cli.command("export-training-artifacts", epilog=EPILOG)
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--loss", required=True, help="A loss name from ax.losses, e.g. mean_squared_error.")
@click.option(
    "--optimizer",
    type=click.Choice(["adam", "adamw", "sgd"]),
    default="adam",
    show_default=True,
    help="adam / adamw run as onnxruntime-training's AdamW, sgd as its SGD.",
)
@click.option("--learning-rate", type=float, default=None, help="Default: the optimizer's own.")
@click.option("--decay", type=float, default=None, help="adamw's decoupled weight decay.")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The directory to write the artifacts to (created if missing).",
)
@click.option(
    "--template",
    "templates",
    multiple=True,
    metavar="[NAME=]DIMS[:DTYPE]",
    help="An input's shape and dtype, e.g. x=1,784:f32 (as for compile).",
)
def export_training_artifacts(
    model: Path,
    loss: str,
    optimizer: str,
    learning_rate: float | None,
    decay: float | None,
    output: Path,
    templates: tuple[str, ...],
) -> None:
    """Write onnxruntime-training artifacts (training, eval and optimizer models, checkpoint)
    for an .axon model file; its parameters are the initial values (spec/ort_training.md)."""
    from .optimizers import get
    from .train import export_ort_training

    options = {} if decay is None else {"decay": decay}
    if decay is not None and optimizer != "adamw":
        raise UserError("--decay applies to --optimizer adamw only")
    ir, state = _load_axon(model)
    with _Progress(f"exporting {model.name}"):
        arts = export_ort_training(
            ir,
            loss,
            get(optimizer, learning_rate=learning_rate, **options),
            output,
            template=_parse_templates(ir, templates),
            state=state if state.paths() else None,
        )
    click.echo(
        f"wrote {arts.training_model.name}, {arts.eval_model.name}, "
        f"{arts.optimizer_model.name}, {arts.checkpoint.name} and {arts.config.name} to "
        f"{output} (inputs: {', '.join(arts.inputs)})"
    )


@cli.command(
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve(args: tuple[str, ...]) -> int:
    """Serve models over KServe V2: `axonrt serve` (needs axonrt[serve]; see its --help)."""
    from axonrt.cli import main as axonrt_main

    return axonrt_main(["serve", *args])


def main(argv: list[str] | None = None) -> None:
    """The console entry point (`axonc = "axonc.cli:main"`)."""
    cli.main(args=argv, prog_name="axonc")


if __name__ == "__main__":
    main()
