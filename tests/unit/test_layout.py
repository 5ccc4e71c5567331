"""The layout holds: no import circle, every module importable alone, small modules, the
hot path free of the ops layer, the redaction tiers independent of the reference redactor."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import auditshipd

PKG = Path(auditshipd.__file__).parent
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(module: str, path: Path) -> set[str]:
    """The auditshipd modules ``module`` imports when it runs (module level and inside
    functions; ``if TYPE_CHECKING:`` blocks never run and are left out)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if sub in MODULES else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in MODULES and m != module}


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _cycle() -> list[str] | None:
    """One import circle, as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_circle():
    """No module imports, directly or not, a module that imports it back."""
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_the_circle_finder_finds_a_circle():
    """The check above can fail: a planted two-module circle is reported."""
    saved = dict(GRAPH)
    try:
        GRAPH["auditshipd.errors"] = {"auditshipd.plugin"}
        GRAPH["auditshipd.plugin"] = GRAPH["auditshipd.plugin"] | {"auditshipd.errors"}
        assert _cycle() is not None
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """Each module imports with nothing of auditshipd loaded before it (an import-order
    circle would fail here even if the static graph missed it)."""
    code = (
        "import importlib, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m == 'auditshipd' or m.startswith('auditshipd.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    names = [m for m in MODULES if m != "auditshipd.testing"] + ["auditshipd.testing"]
    r = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_module_over_450_lines():
    """Modules stay small enough to read in one sitting (the C tier excepted)."""
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_hot_path_does_not_import_the_ops_layer():
    """Importing the delivery driver loads neither aiohttp's web server, prometheus_client
    nor the service package (metrics, status CLI): the daemon passes an observer in."""
    code = (
        "import sys, auditshipd.delivery.driver\n"
        "bad = [m for m in sys.modules if m in ('aiohttp.web', 'prometheus_client')"
        " or m.startswith('auditshipd.service')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_redaction_tiers_do_not_import_the_reference_redactor():
    """The fast path's modules use the public seam (redaction.ids), never the reference
    redactor's module, not even for type hints."""
    for module in ("fastpath", "codegen", "ctier", "events", "ids"):
        path = MODULES[f"auditshipd.redaction.{module}"]
        text = path.read_text()
        assert "redactor import" not in text and ".redactor" not in text, module
