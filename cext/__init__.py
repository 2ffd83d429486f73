"""The Cython hot path: ``cext.engine.Engine`` decides exactly as ``checks.engine.Engine`` does.

Build it in place with ``make build`` (or ``python setup.py build_ext --inplace``); the C book's
layout is in ``cext/book.pxd`` and the engine's typed interface in ``cext/engine.pxd``.
"""
