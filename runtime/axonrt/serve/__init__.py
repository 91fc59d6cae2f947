"""axonrt's inference server: the KServe V2 protocol over Starlette and uvicorn.

`axonrt serve <model file or repository>` starts it (see axonrt.cli);
`create_app(Settings(source=...))` is the ASGI application for embedding or
tests. Needs the `serve` extra (starlette, uvicorn, prometheus-client).
spec/serving.md is the protocol contract, config format and limits.
"""

from .app import Settings, create_app
from .errors import ConfigError, ServeError
from .repository import ModelConfig
from .triton import export_triton, triton_config

__all__ = [
    "ConfigError",
    "ModelConfig",
    "ServeError",
    "Settings",
    "create_app",
    "export_triton",
    "triton_config",
]
