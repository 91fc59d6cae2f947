"""The model repository: a folder with one subfolder per model, or a single model file.

    models/
      mlp/
        config.json          optional: batching limits and threads (see ModelConfig)
        model.onnx           the model file, or version subfolders:
        1/model.onnx
        2/model.onnx

A model folder holds one model file (`.onnx`, or `.tflite` where axonrt can load
it) directly, or numeric version subfolders each holding one; every version is
loaded and the highest is the default. Model names are confined to the
repository: a name is a plain folder name (letters, digits, `_ . -`), never a path.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, NotFound

MODEL_SUFFIXES = (".onnx", ".tflite")
CONFIG_FILE = "config.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


@dataclass(frozen=True)
class ModelConfig:
    """Per-model serving settings; a model's config.json overrides the server's defaults."""

    max_batch_size: int = 64  # rows per batch; 0 or 1 turns batching off
    max_queue_delay_ms: float = 0.0  # how long a batch waits to fill; 0 = run what has queued
    max_queue_size: int = 1024  # requests waiting before new ones get 503
    timeout_ms: float = 30000.0  # per request, queueing plus running
    instances: int = 1  # batches of this model that may run at once
    threads: int = 1  # onnxruntime intra-op threads per model

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if f.type == "int" and not (isinstance(value, int) and number):
                raise ConfigError(f"{f.name} must be an integer, got {value!r}")
            if not number or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{f.name} must be a non-negative number, got {value!r}")
        for name in ("max_queue_size", "instances", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.timeout_ms <= 0:
            raise ConfigError(f"timeout_ms must be positive, got {self.timeout_ms}")

    def updated(self, values: dict[str, Any], source: str) -> ModelConfig:
        """A copy with `values` applied; unknown keys are an error naming `source`."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        try:
            return replace(self, **values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def valid_name(name: str) -> bool:
    """Whether `name` is a plain folder name (letters, digits, `_ . -`, no `..`)."""
    return bool(_NAME.fullmatch(name)) and ".." not in name


def check_name(name: str) -> str:
    """`name` if it is a valid model name, else NotFound (never a path outside the repository)."""
    if not valid_name(name):
        raise NotFound(
            f"no model named {name!r} (a model name is a folder name of letters, digits, '_.-')"
        )
    return name


def _model_file(folder: Path) -> Path:
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES)
    if len(found) != 1:
        what = "no model file" if not found else f"{len(found)} model files"
        raise ConfigError(f"{folder}: {what}; expected exactly one {' or '.join(MODEL_SUFFIXES)}")
    return found[0]


@dataclass(frozen=True)
class ModelSource:
    """Where one model's versions live, and its settings."""

    name: str
    versions: dict[str, Path]  # version -> model file
    config: ModelConfig

    @property
    def default_version(self) -> str:
        """The highest version."""
        return max(self.versions, key=int)


class Repository:
    """A folder of model folders, or a single model file served as one model."""

    def __init__(self, path: str | Path, defaults: ModelConfig):
        self.path = Path(path)
        self.defaults = defaults
        if not self.path.exists():
            raise ConfigError(f"{self.path}: no such file or directory")
        self.single = self.path.is_file()
        if self.single and self.path.suffix not in MODEL_SUFFIXES:
            raise ConfigError(
                f"{self.path}: expected a model file ({', '.join(MODEL_SUFFIXES)}) "
                "or a repository folder"
            )

    def names(self) -> list[str]:
        """Every model the repository holds (valid folder names only)."""
        if self.single:
            return [self.path.stem]
        return sorted(p.name for p in self.path.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))

    def source(self, name: str) -> ModelSource:
        """The versions and config of model `name`; NotFound or ConfigError if unusable."""
        check_name(name)
        if self.single:
            if name != self.path.stem:
                raise NotFound(f"no model named {name!r}; this server serves {self.path.stem!r}")
            return ModelSource(name, {"1": self.path}, self.defaults)
        folder = (self.path / name).resolve()
        if folder.parent != self.path.resolve() or not folder.is_dir():
            raise NotFound(f"no model named {name!r} in {self.path}")
        config = self.defaults
        config_file = folder / CONFIG_FILE
        if config_file.is_file():
            config = self.defaults.updated(_read_config(config_file), str(config_file))
        version_dirs = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
        if version_dirs:
            versions = {str(int(p.name)): _model_file(p) for p in version_dirs}
        else:
            versions = {"1": _model_file(folder)}
        return ModelSource(name, versions, config)


def _read_config(path: Path) -> dict[str, Any]:
    if path.stat().st_size > 1 << 16:
        raise ConfigError(f"{path}: larger than 64 KiB, not a config file")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a JSON object of settings")
    return values


__all__ = [
    "CONFIG_FILE",
    "MODEL_SUFFIXES",
    "ModelConfig",
    "ModelSource",
    "Repository",
    "check_name",
    "valid_name",
]
