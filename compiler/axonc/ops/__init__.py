"""Op families, one module each; `axonc.registry.load_ops` imports them all.

Importing this package registers nothing by itself, so one family (or
axonc.numpy, which needs the primitives) can load without the others.
"""

FAMILIES = (
    "special",
    "primitives",
    "activation",
    "linear",
    "conv",
    "pooling",
    "normalization",
    "dropout",
    "recurrent",
    "combinators",
    "shape",
    "custom",
    "composite",
)
