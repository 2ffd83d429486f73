"""Build script: cythonizes the hot paths in ``cext/`` and ``gateway/``.

Everything else about the package lives in ``pyproject.toml``; this file exists only because
Cython extensions need a ``setup()`` call with ``ext_modules``.
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

# -ffp-contract=off: the Cython engine must make exactly the floating-point decisions the
# Python reference makes, so the compiler may not fuse a*b+c into one FMA with different rounding.
COMPILE_ARGS = ["-O3", "-ffp-contract=off"]

# cext/: the risk engine. gateway/: the router's compiled order path (gateway/fastroute.pyx).
extensions = [
    Extension(f"{pyx.parent.name}.{pyx.stem}", [str(pyx)], extra_compile_args=COMPILE_ARGS)
    for pyx in sorted([*Path("cext").glob("*.pyx"), *Path("gateway").glob("*.pyx")])
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
