"""Op families, one module each; `axonc.registry.load_ops` imports them all.

Importing this package registers nothing by itself, so one family (or
axonc.numpy, which reads the primitives' tables in `_primitive_data`) can load
without the others. Modules named with a leading underscore are shared helpers,
not families.
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
