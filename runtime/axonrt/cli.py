"""The `axonrt` command line: serve models over KServe V2, export a Triton repository.

    axonrt serve models/ --port 8000
    axonrt serve mlp.onnx --max-batch-size 64 --max-queue-delay-ms 0 --workers 2
    axonrt export-triton mlp.onnx -o triton_repo/

Exit codes: 0 success; 1 a user error (bad arguments, a missing or malformed
model or repository), reported as one line on stderr. The bearer token may come
from --token or, kept out of the process list, the AXONRT_TOKEN variable.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from .errors import AxonrtError

SERVE_EXTRA = "the server needs the serve extra: pip install 'axonrt[serve]'"


def _logging_config(level: str, access: bool) -> dict[str, Any]:
    """uvicorn's loggers plus axonrt's: access lines are bare JSON (one object per line)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(levelname)s %(name)s: %(message)s"},
            "json": {"format": "%(message)s"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
            "access": {"class": "logging.StreamHandler", "formatter": "json"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "axonrt.serve": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "axonrt.access": {
                "handlers": ["access"],
                "level": "INFO" if access else "WARNING",
                "propagate": False,
            },
        },
    }


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .serve.app import Settings
        from .serve.repository import ModelConfig, Repository
    except ImportError as exc:
        raise AxonrtError(f"{SERVE_EXTRA} ({exc})") from None
    defaults = ModelConfig(
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        max_queue_size=args.max_queue_size,
        timeout_ms=args.timeout_ms,
        threads=args.threads,
    )
    settings = Settings(
        source=os.path.abspath(args.source),
        defaults=defaults,
        max_body_bytes=args.max_body_bytes,
        max_tensor_bytes=args.max_body_bytes,
        access_log=not args.no_access_log,
    )
    names = Repository(settings.source, defaults).names()
    if args.workers < 1:
        raise AxonrtError(f"--workers must be at least 1, got {args.workers}")
    os.environ["AXONRT_SERVE_SETTINGS"] = settings.to_json()
    token = args.token or os.environ.get("AXONRT_TOKEN")
    if token:
        os.environ["AXONRT_TOKEN"] = token
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="axonrt-metrics-")
    print(
        f"axonrt: serving {len(names)} model(s) ({', '.join(names) or 'none'}) on "
        f"http://{args.host}:{args.port} with {args.workers} worker(s)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        "axonrt.serve.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_config=_logging_config(args.log_level, not args.no_access_log),
        timeout_graceful_shutdown=args.graceful_timeout,
        limit_concurrency=args.max_connections,
    )
    return 0


def _export_triton(args: argparse.Namespace) -> int:
    from .serve.triton import export_triton  # the serve package needs the `serve` extra

    folder = export_triton(
        args.model,
        args.output,
        name=args.name,
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
    )
    print(f"wrote {folder / 'config.pbtxt'} and {folder / '1' / 'model.onnx'}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="axonrt", description="Serve axonrt models (KServe V2) or export them for Triton."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a model file or a model repository folder")
    serve.add_argument("source", help="a .onnx file, or a repository folder (one folder per model)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="server processes sharing the port")
    serve.add_argument("--max-batch-size", type=int, default=64, help="rows per batch (0/1: off)")
    serve.add_argument(
        "--max-queue-delay-ms", type=float, default=0.0, help="wait to fill a batch (0: don't)"
    )
    serve.add_argument("--max-queue-size", type=int, default=1024, help="queued requests per model")
    serve.add_argument("--timeout-ms", type=float, default=30000.0, help="per-request timeout")
    serve.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model")
    serve.add_argument(
        "--max-body-bytes", type=int, default=64 << 20, help="request body and tensor size limit"
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="per worker: connections and requests at once beyond which new ones get 503",
    )
    serve.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or AXONRT_TOKEN)")
    serve.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds to drain at shutdown"
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--no-access-log", action="store_true", help="no JSON access log lines")
    serve.set_defaults(run=_serve)
    export = sub.add_parser("export-triton", help="write a Triton model repository entry")
    export.add_argument("model", help="the .onnx file")
    export.add_argument("-o", "--output", required=True, help="the Triton repository folder")
    export.add_argument("--name", help="model name (default: the file's stem)")
    export.add_argument("--max-batch-size", type=int, default=64, help="Triton's max_batch_size")
    export.add_argument(
        "--max-queue-delay-ms", type=float, default=0.0, help="the dynamic batcher's delay"
    )
    export.set_defaults(run=_export_triton)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user errors are one line on stderr and exit code 1."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (AxonrtError, OSError) as exc:
        print(f"axonrt {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1


def entry() -> None:
    """The console script."""
    sys.exit(main())


if __name__ == "__main__":
    entry()


__all__ = ["entry", "main"]
