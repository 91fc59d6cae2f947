"""axonrt: load and run models compiled by axonc, without axonc installed.

Servers and devices install this package alone; it never imports axonc. The
ONNX and TFLite loaders arrive with the compilers that produce those files.
"""

__version__ = "0.1.0"
