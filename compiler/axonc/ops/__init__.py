"""Op families; importing this package registers every op and layer constructor."""

from importlib import import_module

FAMILIES = (
    "special",
    "primitives",
    "activation",
    "linear",
    "conv",
    "pooling",
    "normalization",
    "dropout",
    "random",
    "recurrent",
    "combinators",
    "shape",
    "custom",
    "composite",
)

for _family in FAMILIES:
    import_module(f"{__name__}.{_family}")
