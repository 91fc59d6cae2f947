"""axonrt models as a Ray Serve deployment: replicas, autoscaling and Serve's own batching.

    from axonrt.serve.ray_serve import deployment
    from ray import serve

    serve.run(deployment("mlp.onnx", num_replicas=2, max_batch_size=64), route_prefix="/")

Each replica loads the model with axonrt and answers the KServe V2 infer, metadata
and ready routes of that one model (`/v2/models/<name>/...`, JSON or binary tensors,
the same body codec and input checks as `axonrt serve`); rows from concurrent requests
are merged by `ray.serve.batch`. Needs the `ray` extra; for multi-node scale-out.
On one small machine `axonrt serve --workers N` is much faster (Serve adds a proxy hop
and actor calls per request).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .app import _check_inputs, _outputs, _tensor_meta, open_model, output_names
from .errors import NotFound, ProtocolError, ServeError
from .protocol import Limits, encode_response, parse_infer


class AxonrtDeployment:
    """One replica: an axonrt model behind the V2 routes, batched by Serve."""

    def __init__(
        self,
        path: str,
        name: str,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        threads: int,
        max_body_bytes: int,
    ):
        self.model = open_model(Path(path), threads)
        self.name = name
        self.names = output_names(self.model)
        self.max_body_bytes = max_body_bytes
        self.limits = Limits(max_tensor_bytes=max_body_bytes)
        self.run_batch.set_max_batch_size(max_batch_size)
        self.run_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def run_batch(self, feeds: list[dict[str, np.ndarray]]) -> list[Any]:
        """Serve hands a list of requests' feeds; merged along dimension 0 when shapes agree."""
        keys = {tuple((k, v.shape[1:]) for k, v in sorted(f.items())) for f in feeds}
        if len(feeds) > 1 and len(keys) == 1:
            merged = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
            outputs = self.model.run(merged)
            bounds = np.cumsum([next(iter(f.values())).shape[0] for f in feeds])[:-1]
            split = {n: np.split(v, bounds) for n, v in outputs.items()}
            return [{n: split[n][i] for n in outputs} for i in range(len(feeds))]
        return [self.model.run(f) for f in feeds]

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except ServeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    async def _route(self, request: Request) -> Response:
        parts = [p for p in request.url.path.split("/") if p]
        if parts[:3] != ["v2", "models", self.name]:
            raise NotFound(f"no route {request.url.path}; this deployment serves {self.name!r}")
        rest = parts[3:]
        if rest == [] and request.method == "GET":
            sigs = {s.name: s for s in self.model.outputs}
            return JSONResponse(
                {
                    "name": self.name,
                    "versions": ["1"],
                    "platform": "onnxruntime_onnx",
                    "inputs": [_tensor_meta(s) for s in self.model.inputs],
                    "outputs": [
                        {**_tensor_meta(sigs[g]), "name": p} for p, g in self.names.items()
                    ],
                }
            )
        if rest == ["ready"]:
            return Response(status_code=200)
        if rest == ["infer"] and request.method == "POST":
            return await self._infer(request)
        raise NotFound(f"no route {request.method} {request.url.path}")

    async def _infer(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > self.max_body_bytes:
            raise ProtocolError(f"request body exceeds the limit of {self.max_body_bytes} bytes")
        parsed = parse_infer(
            body, request.headers.get("inference-header-content-length"), self.limits
        )
        _check_inputs(self.model, parsed.inputs)
        outputs = _outputs(self.names, parsed.outputs, parsed.binary_default)
        results = await self.run_batch(parsed.inputs)
        payload, header_length = encode_response(
            self.name,
            "1",
            parsed.request_id,
            [(n, results[self.names[n]], b) for n, b in outputs],
        )
        if header_length is None:
            return Response(payload, media_type="application/json")
        return Response(
            payload,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(header_length)},
        )


def deployment(
    path: str | Path,
    *,
    name: str | None = None,
    num_replicas: int | str = 1,
    autoscaling_config: dict[str, Any] | None = None,
    max_batch_size: int = 64,
    batch_wait_timeout_s: float = 0.0,
    threads: int = 1,
    max_body_bytes: int = 64 << 20,
    ray_actor_options: dict[str, Any] | None = None,
) -> Any:
    """A Serve application for one model file; pass it to `serve.run`.

    `autoscaling_config` (Serve's own: min_replicas, max_replicas,
    target_ongoing_requests, ...) replaces `num_replicas` when given.
    """
    path = Path(path).resolve()
    name = name or path.stem
    options: dict[str, Any] = {
        "name": f"axonrt-{name}",
        "ray_actor_options": ray_actor_options or {"num_cpus": 1},
    }
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas
    cls = serve.deployment(**options)(AxonrtDeployment)
    return cls.bind(str(path), name, max_batch_size, batch_wait_timeout_s, threads, max_body_bytes)


__all__ = ["AxonrtDeployment", "deployment"]
