"""Build of the optional C tier of the redaction fast path (everything else is in pyproject.toml).

``optional=True``: without a C compiler and the Python headers the package still installs
and redaction runs on its Python tiers (the same output, slower; ``bench/bench_redact.py``
prints which tier is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "auditshipd.redaction._redact_c",
            ["src/auditshipd/redaction/_redact_c.c"],
            optional=True,
            extra_compile_args=["-O2", "-std=c11"],
        )
    ]
)
