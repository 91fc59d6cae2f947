"""The KServe V2 HTTP/REST server: a Starlette application over a model repository.

Routes (every model route also under `/v2/models/{m}/versions/{v}/...`):

    GET  /v2/health/live, /v2/health/ready     200, or 400 when not ready
    GET  /v2                                   server metadata
    GET  /v2/models/{m}, /v2/models/{m}/ready  model metadata, model readiness
    GET  /v2/models/{m}/config                 the model's serving settings
    POST /v2/models/{m}/infer                  JSON tensors or binary tensor data
    POST /v2/repository/index                  the repository extension: index,
    POST /v2/repository/models/{m}/load        load or reload,
    POST /v2/repository/models/{m}/unload      unload
    GET  /metrics                              Prometheus text format

Every non-200 body is `{"error": "..."}`. Bodies are parsed here (protocol.py),
not by a framework model, so what tritonclient sends (no Content-Type, binary
tails) is accepted. spec/serving.md is the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import axonrt

from .. import __version__
from ..model import _decode
from .batching import Batcher, Servable, batchable
from .errors import NotFound, ProtocolError, ServeError, TooLarge, Unauthorized, Unavailable
from .metrics import Metrics
from .protocol import Limits, datatype_of, encode_response, parse_infer
from .repository import ModelConfig, ModelSource, Repository, check_name

access_log = logging.getLogger("axonrt.access")
log = logging.getLogger("axonrt.serve")

# Bodies larger than this are decoded in a thread rather than on the event loop.
PARSE_IN_THREAD_BYTES = 256 << 10

EXTENSIONS = ["binary_tensor_data", "model_repository"]


@dataclass(frozen=True)
class Settings:
    """Everything a server process needs; JSON-serialisable so worker processes can share it."""

    source: str
    defaults: ModelConfig = field(default_factory=ModelConfig)
    token: str | None = None
    max_body_bytes: int = 64 << 20
    max_tensor_bytes: int = 64 << 20
    access_log: bool = True

    def to_json(self) -> str:
        """The settings as JSON (token included: pass it through the environment only)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        """The inverse of `to_json`."""
        values = json.loads(text)
        values["defaults"] = ModelConfig(**values["defaults"])
        return cls(**values)


# ---- the models being served -----------------------------------------------------------


@dataclass
class Version:
    """One loaded model version, its batcher, and its outputs' public names."""

    model: Servable
    batcher: Batcher
    file: Path
    names: dict[str, str] = field(default_factory=dict)  # public name -> graph output name

    def __post_init__(self) -> None:
        self.names = output_names(self.model)


def output_names(model: Servable) -> dict[str, str]:
    """Public output names: an axonc model's paths in its output container, else graph names.

    axonc records the nesting in metadata "axonc.outputs"; a leaf's name is its
    path of dict keys and tuple/list positions joined by "/" ("first", "rest/1/0"),
    and a single-output model keeps its graph output's name.
    """
    graph = [s.name for s in model.outputs]
    text = getattr(model, "metadata", {}).get("axonc.outputs")
    if text is None:
        return {n: n for n in graph}
    structure = _decode(json.loads(text), "model")
    if isinstance(structure, str) or structure is None:
        return {n: n for n in graph}
    names: dict[str, str] = {}
    _paths(structure, (), names)
    return names if sorted(names.values()) == sorted(graph) else {n: n for n in graph}


def _paths(structure: Any, path: tuple[str, ...], out: dict[str, str]) -> None:
    if isinstance(structure, dict):
        for key, value in structure.items():
            _paths(value, (*path, str(key)), out)
    elif isinstance(structure, (tuple, list)):
        for i, value in enumerate(structure):
            _paths(value, (*path, str(i)), out)
    elif structure is not None:
        out["/".join(path)] = structure


@dataclass
class Entry:
    """A model's state as the repository extension reports it."""

    name: str
    state: str = "UNAVAILABLE"  # READY, LOADING, UNAVAILABLE
    reason: str = ""
    versions: dict[str, Version] = field(default_factory=dict)
    default: str = ""
    config: ModelConfig | None = None


def open_model(path: Path, threads: int) -> Servable:
    """A model file as an axonrt model; onnxruntime's thread spinning off (shared cores)."""
    if path.suffix == ".onnx":
        return axonrt.load(path, threads=threads, spinning=False)
    return axonrt.load(path)


class Store:
    """The models of one server process: loading, unloading, lookup."""

    def __init__(self, repository: Repository, metrics: Metrics):
        self.repository = repository
        self.metrics = metrics
        self.entries: dict[str, Entry] = {}
        self._lock = asyncio.Lock()

    async def load_all(self) -> None:
        """Load every model in the repository; failures are recorded, not raised."""
        for name in self.repository.names():
            with contextlib.suppress(ServeError):
                await self.load(name)

    async def load(self, name: str) -> Entry:
        """Load or reload `name`; the old versions serve until the new ones are ready."""
        check_name(name)
        async with self._lock:
            old = self.entries.get(name)
            entry = Entry(name, state="LOADING")
            if old is None:
                self.entries[name] = entry
            try:
                source = await asyncio.to_thread(self.repository.source, name)
                models = await asyncio.to_thread(_open_versions, source)
            except NotFound:
                if old is None:
                    del self.entries[name]
                raise
            except Exception as exc:  # a failed load: unavailable, unless a version serves
                reason = f"{type(exc).__name__}: {exc}"
                log.warning("model %s failed to load: %s", name, reason)
                if old is not None and old.state == "READY":
                    raise ProtocolError(
                        f"model {name!r} failed to reload, the loaded versions keep serving: "
                        f"{reason}"
                    ) from None
                entry.state, entry.reason = "UNAVAILABLE", reason
                self.entries[name] = entry
                raise ProtocolError(f"model {name!r} failed to load: {reason}") from None
            entry.config = source.config
            entry.versions = {
                v: Version(m, self._batcher(name, v, m, source.config), source.versions[v])
                for v, m in models.items()
            }
            entry.default = source.default_version
            entry.state = "READY"
            self.entries[name] = entry
            if old is not None:
                await _stop(old)
            return entry

    def _batcher(self, name: str, version: str, model: Servable, config: ModelConfig) -> Batcher:
        label = name if version == "1" else f"{name}/{version}"
        return Batcher(
            model,
            label,
            max_batch_size=config.max_batch_size,
            max_queue_delay_ms=config.max_queue_delay_ms,
            max_queue_size=config.max_queue_size,
            instances=config.instances,
            observer=self.metrics,
        )

    async def unload(self, name: str) -> None:
        """Stop serving `name`, finishing its queued requests first."""
        check_name(name)
        async with self._lock:
            entry = self.entries.get(name)
            if entry is None:
                raise NotFound(f"model {name!r} is not loaded")
            entry.state, entry.reason = "UNAVAILABLE", "unloaded"
            old_versions = entry.versions
            entry.versions = {}
            await _stop(Entry(name, versions=old_versions))

    def get(self, name: str, version: str | None) -> tuple[Entry, str, Version]:
        """The ready version asked for; NotFound or Unavailable saying why not."""
        check_name(name)
        entry = self.entries.get(name)
        if entry is None:
            raise NotFound(f"unknown model {name!r}; models: {', '.join(sorted(self.entries))}")
        if entry.state != "READY":
            reason = f": {entry.reason}" if entry.reason else ""
            raise Unavailable(f"model {name!r} is not ready ({entry.state}{reason})")
        v = entry.default if version is None else version
        if v not in entry.versions:
            raise NotFound(
                f"model {name!r} has no version {v!r}; "
                f"versions: {', '.join(sorted(entry.versions, key=int))}"
            )
        return entry, v, entry.versions[v]

    async def close(self) -> None:
        """Drain and stop every batcher."""
        await asyncio.gather(*(_stop(e) for e in self.entries.values()))


def _open_versions(source: ModelSource) -> dict[str, Servable]:
    return {v: open_model(p, source.config.threads) for v, p in source.versions.items()}


async def _stop(entry: Entry) -> None:
    await asyncio.gather(*(v.batcher.stop() for v in entry.versions.values()))


# ---- request handling ---------------------------------------------------------------------


def _error(exc: ServeError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "identity":
        return body
    return _decompress(body, encoding, limit)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate (zlib) body, never inflated past `limit` bytes."""
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise ProtocolError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"the {encoding} body is corrupt: {exc}") from None
    if len(out) > limit:
        raise TooLarge(f"the decompressed request body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise ProtocolError(f"the {encoding} body is truncated")
    return out


def _dims(shape: Any) -> list[int]:
    return [-1] if shape is None else [d if isinstance(d, int) else -1 for d in shape]


def _tensor_meta(sig: Any) -> dict[str, Any]:
    return {"name": sig.name, "datatype": datatype_of(sig.dtype), "shape": _dims(sig.shape)}


def _check_inputs(model: Servable, inputs: dict[str, np.ndarray]) -> None:
    """Names, datatypes and shapes against the signature, before anything is queued."""
    sigs = {s.name: s for s in model.inputs}
    for name in inputs:
        if name not in sigs:
            raise ProtocolError(
                f"unknown input {name!r}; the model's inputs are {', '.join(map(repr, sigs))}"
            )
    missing = [n for n in sigs if n not in inputs]
    if missing:
        raise ProtocolError(f"missing input(s) {', '.join(map(repr, missing))}")
    batch = None
    for name, arr in inputs.items():
        sig = sigs[name]
        want = datatype_of(sig.dtype)
        got = datatype_of(arr.dtype.name)
        if got != want:
            raise ProtocolError(f"input {name!r}: expected datatype {want}, got {got}")
        if sig.shape is None:
            continue
        expected = _dims(sig.shape)
        if len(arr.shape) != len(expected) or any(
            e not in (-1, g) for e, g in zip(expected, arr.shape)
        ):
            raise ProtocolError(
                f"input {name!r}: expected shape {expected} (-1 = any), got {list(arr.shape)}"
            )
        if batchable(model):
            if batch is not None and arr.shape[0] != batch[0]:
                raise ProtocolError(
                    f"input {name!r}: batch size {arr.shape[0]} differs from input "
                    f"{batch[1]!r}'s {batch[0]}"
                )
            batch = (arr.shape[0], name)


def _outputs(
    names: dict[str, str], requested: list[tuple[str, bool | None]] | None, binary: bool
) -> list[tuple[str, bool]]:
    """(public name, as binary) for each output to return."""
    if requested is None:
        return [(n, binary) for n in names]
    for n, _ in requested:
        if n not in names:
            raise ProtocolError(
                f"unknown output {n!r}; the model's outputs are {', '.join(map(repr, names))}"
            )
    return [(n, binary if b is None else b) for n, b in requested]


def _timeout(parameters: dict[str, Any], config: ModelConfig) -> float:
    """Seconds: the model's timeout, shortened by a request's `timeout` parameter (µs)."""
    limit = config.timeout_ms / 1000.0
    requested = parameters.get("timeout")
    if requested is None:
        return limit
    if isinstance(requested, bool) or not isinstance(requested, (int, float)) or requested <= 0:
        raise ProtocolError("parameter 'timeout' must be a positive number of microseconds")
    return min(limit, requested / 1e6)


class Server:
    """The handlers, bound to one Store and Settings."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.repository = Repository(settings.source, settings.defaults)
        self.limits = Limits(max_tensor_bytes=settings.max_tensor_bytes)
        self.store: Store | None = None
        self.ready = False

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> Any:
        """Load the repository at start; drain and stop every batcher at shutdown."""
        self.store = Store(self.repository, self.metrics)
        await self.store.load_all()
        self.ready = True
        try:
            yield
        finally:
            self.ready = False
            await self.store.close()

    def _authorize(self, request: Request) -> None:
        token = self.settings.token
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized(
                "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def endpoint(
        self, handler: Callable[[Request], Awaitable[Response]], *, public: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """Auth, typed errors as JSON bodies, and one access-log line per request."""

        async def wrapped(request: Request) -> Response:
            start = time.perf_counter()
            try:
                if not public:
                    self._authorize(request)
                response = await handler(request)
            except ServeError as exc:
                response = _error(exc)
            except Exception as exc:  # a bug must answer 500, never drop the connection
                log.exception("internal error on %s", request.url.path)
                response = _error(ServeError(f"internal error: {type(exc).__name__}: {exc}"))
            if self.settings.access_log:
                self._log(request, response, time.perf_counter() - start)
            return response

        return wrapped

    def _log(self, request: Request, response: Response, seconds: float) -> None:
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "client": request.client.host if request.client else None,
            "method": request.method,
            "path": request.url.path,
            "status": response.status_code,
            "ms": round(seconds * 1000, 3),
            "request_id": request.state.request_id
            if hasattr(request.state, "request_id")
            else None,
        }
        access_log.info(json.dumps(record))

    # ---- health and metadata ----

    async def live(self, request: Request) -> Response:
        return Response(status_code=200)

    async def server_ready(self, request: Request) -> Response:
        if not self.ready:
            raise ProtocolError("the server is starting or shutting down")
        return Response(status_code=200)

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": "axonrt", "version": __version__, "extensions": EXTENSIONS})

    def _store(self) -> Store:
        if self.store is None:
            raise Unavailable("the server is starting")
        return self.store

    def _lookup(self, request: Request) -> tuple[Entry, str, Version]:
        params = request.path_params
        return self._store().get(params["model"], params.get("version"))

    async def model_ready(self, request: Request) -> Response:
        try:
            self._lookup(request)
        except Unavailable as exc:
            raise ProtocolError(str(exc)) from None
        return Response(status_code=200)

    async def model_metadata(self, request: Request) -> Response:
        entry, _version, loaded = self._lookup(request)
        model = loaded.model
        platform = "onnxruntime_onnx" if loaded.file.suffix == ".onnx" else "tflite"
        sigs = {s.name: s for s in model.outputs}
        return JSONResponse(
            {
                "name": entry.name,
                "versions": sorted(entry.versions, key=int),
                "platform": platform,
                "inputs": [_tensor_meta(s) for s in model.inputs],
                "outputs": [
                    {**_tensor_meta(sigs[graph]), "name": public}
                    for public, graph in loaded.names.items()
                ],
            }
        )

    async def model_config(self, request: Request) -> Response:
        entry, version, loaded = self._lookup(request)
        assert entry.config is not None
        body = {"name": entry.name, "version": version, **asdict(entry.config)}
        body["batching"] = loaded.batcher.batching
        return JSONResponse(body)

    # ---- inference ----

    async def infer(self, request: Request) -> Response:
        start = time.perf_counter()
        name = request.path_params["model"]
        label = name
        try:
            entry, version, loaded = self._lookup(request)
            label = loaded.batcher.name
            body = await _read_body(request, self.settings.max_body_bytes)
            header_length = request.headers.get("inference-header-content-length")
            if len(body) > PARSE_IN_THREAD_BYTES:  # keep the event loop free for other requests
                parsed = await asyncio.to_thread(parse_infer, body, header_length, self.limits)
            else:
                parsed = parse_infer(body, header_length, self.limits)
            request.state.request_id = parsed.request_id
            model = loaded.model
            _check_inputs(model, parsed.inputs)
            outputs = _outputs(loaded.names, parsed.outputs, parsed.binary_default)
            assert entry.config is not None
            timeout = _timeout(parsed.parameters, entry.config)
            results = await loaded.batcher.submit(parsed.inputs, timeout)
            payload, header_length = encode_response(
                entry.name,
                version,
                parsed.request_id,
                [(n, results[loaded.names[n]], binary) for n, binary in outputs],
            )
        except ServeError as exc:
            if not isinstance(exc, NotFound) or label != name:
                self.metrics.request(label, exc.status, time.perf_counter() - start, _reason(exc))
            raise
        self.metrics.request(label, 200, time.perf_counter() - start, None)
        if header_length is None:
            return Response(payload, media_type="application/json")
        return Response(
            payload,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    # ---- repository extension ----

    async def repository_index(self, request: Request) -> Response:
        body = await _read_body(request, 1 << 16)
        ready_only = False
        if body.strip():
            try:
                doc = json.loads(body)
            except ValueError as exc:
                raise ProtocolError(f"the request is not valid JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise ProtocolError("the request must be a JSON object")
            ready_only = doc.get("ready") is True
        store = self._store()
        index = []
        names = sorted(set(self.repository.names()) | set(store.entries))
        for name in names:
            entry = store.entries.get(name)
            if entry is None:
                if not ready_only:
                    index.append({"name": name, "state": "UNAVAILABLE", "reason": "not loaded"})
                continue
            if ready_only and entry.state != "READY":
                continue
            if entry.versions:
                for v in sorted(entry.versions, key=int):
                    index.append({"name": name, "version": v, "state": entry.state, "reason": ""})
            else:
                index.append({"name": name, "state": entry.state, "reason": entry.reason})
        return JSONResponse(index)

    async def repository_load(self, request: Request) -> Response:
        await _read_body(request, 1 << 16)
        await self._store().load(request.path_params["model"])
        return Response(status_code=200)

    async def repository_unload(self, request: Request) -> Response:
        await _read_body(request, 1 << 16)
        await self._store().unload(request.path_params["model"])
        return Response(status_code=200)

    async def metrics_text(self, request: Request) -> Response:
        for entry in self._store().entries.values():
            for v in entry.versions.values():
                self.metrics.queued(v.batcher.name, v.batcher.depth)
        return Response(self.metrics.render(), media_type=self.metrics.content_type)


def _reason(exc: ServeError) -> str:
    return {400: "bad_request", 404: "not_found", 413: "too_large", 503: "unavailable"}.get(
        exc.status, "timeout" if exc.status == 504 else "error"
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 as JSON error bodies."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    message = f"{request.method} {request.url.path}: {detail}"
    return JSONResponse({"error": message}, status_code=status)


def create_app(settings: Settings) -> Starlette:
    """The ASGI application serving `settings.source`."""
    server = Server(settings)
    ep = server.endpoint
    model_routes = [  # infer first: Starlette tries routes in order
        ("/infer", server.infer, ["POST"]),
        ("", server.model_metadata, ["GET"]),
        ("/ready", server.model_ready, ["GET"]),
        ("/config", server.model_config, ["GET"]),
    ]
    routes: list[Route] = []
    for suffix, handler, methods in model_routes:
        routes.append(Route(f"/v2/models/{{model}}{suffix}", ep(handler), methods=methods))
        routes.append(
            Route(
                f"/v2/models/{{model}}/versions/{{version}}{suffix}", ep(handler), methods=methods
            )
        )
    routes += [
        Route("/v2/health/live", ep(server.live, public=True), methods=["GET"]),
        Route("/v2/health/ready", ep(server.server_ready, public=True), methods=["GET"]),
        Route("/v2", ep(server.server_metadata), methods=["GET"]),
        Route("/v2/", ep(server.server_metadata), methods=["GET"]),
        Route("/metrics", ep(server.metrics_text), methods=["GET"]),
        Route("/v2/repository/index", ep(server.repository_index), methods=["POST"]),
        Route("/v2/repository/models/{model}/load", ep(server.repository_load), methods=["POST"]),
        Route(
            "/v2/repository/models/{model}/unload", ep(server.repository_unload), methods=["POST"]
        ),
    ]
    app = Starlette(
        routes=routes,
        lifespan=server.lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.server = server
    return app


def app_from_env() -> Starlette:
    """The application factory uvicorn's worker processes call (settings in the environment)."""
    settings = Settings.from_json(os.environ["AXONRT_SERVE_SETTINGS"])
    token = os.environ.get("AXONRT_TOKEN")
    if token:
        settings = replace(settings, token=token)
    return create_app(settings)


__all__ = ["EXTENSIONS", "Server", "Settings", "Store", "app_from_env", "create_app"]
