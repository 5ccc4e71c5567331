"""Build of the optional C extensions (the redaction fast path, the SIEM format encoders,
the integrity hash chain, the portal store's rows and keyword vectors, its ``COPY``
input), and of the files the wheel ships for users (everything else is
in pyproject.toml).

``optional=True``: without a C compiler and the Python headers the package still installs
and runs on the Python code each extension mirrors (the same output, slower; the daemon
says so once at start for redaction, ``bench/bench_redact.py`` prints which tier is in
use).

The example configs, the systemd unit, the docs, the README and the LICENSE live once, at
the top of the source tree; ``build_py`` copies them into ``auditshipd/share/`` of the
wheel, where ``auditshipd init`` and ``auditshipd.shipped`` find them.
"""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# (source glob, destination directory under auditshipd/share/)
SHIPPED = [
    ("LICENSE", "."),
    ("README.md", "."),
    ("config/*.toml", "config"),
    ("docs/*.md", "docs"),
    ("systemd/auditshipd.service", "systemd"),
    ("plugins/*.py", "plugins"),
]

# The optional C extensions, each beside the Python code it mirrors byte for byte.
C_EXTENSIONS = ["redaction._redact_c", "formats._formats_c", "integrity._chain_c",
                "portal._tsvector_c", "portal._pgcopy_c"]


class BuildPyWithShare(build_py):
    def run(self):
        super().run()
        share = Path(self.build_lib) / "auditshipd" / "share"
        for pattern, dest in SHIPPED:
            matches = sorted(ROOT.glob(pattern))
            if not matches:  # an sdist without them would build a wheel missing them
                raise SystemExit(f"setup.py: nothing matches {pattern} (see MANIFEST.in)")
            for src in matches:
                (share / dest).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, share / dest / src.name)


setup(
    cmdclass={"build_py": BuildPyWithShare},
    ext_modules=[
        Extension(
            f"auditshipd.{name}",
            [f"src/auditshipd/{name.replace('.', '/')}.c"],
            optional=True,
            extra_compile_args=["-O2", "-std=c11"],
        )
        for name in C_EXTENSIONS
    ],
)
