"""The library's layout (docs/design.md §2): the method at the top of ``styo/`` never imports the
command line, the book or the world, and the command line's modules import one another one way.

Read from the source with ``ast`` (nothing is imported), so an import inside a function counts as
much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STYO = Path(__file__).resolve().parent.parent / "styo"
APART = ("styo.cli", "styo.book", "styo.world")  # packages the method must not depend on


def module_name(path: Path) -> str:
    parts = list(path.relative_to(STYO.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, source: str | None = None) -> set[str]:
    """Every module ``path`` (or ``source`` at its place) imports, as absolute names, wherever
    the import statement stands. ``from X import name`` counts ``X`` and ``X.name`` (``name`` may
    be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    source = path.read_text() if source is None else source
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


METHOD = sorted(p for p in STYO.glob("*.py"))


def test_the_method_is_at_the_top():
    names = {p.stem for p in METHOD}
    assert {"prompts", "idl", "attention", "fcc", "data", "pipeline"} <= names
    assert not names & {"cli", "book", "world"}, "a module would shadow a package"
    for package in ("cli", "book", "world"):
        assert (STYO / package / "__init__.py").is_file()


@pytest.mark.parametrize("path", METHOD, ids=lambda p: p.name)
def test_method_never_imports_cli_book_or_world(path):
    bad = sorted(m for m in imported_modules(path) if any(within(m, p) for p in APART))
    assert not bad, f"styo/{path.name} imports {bad}: the method must not depend on {APART}"


def test_the_checker_sees_relative_and_nested_imports():
    """The forms a method module could use, in a function or at the top, absolute or relative."""
    source = ("import styo.world.render\n"
              "def f():\n    from .book import viz\n    from . import cli\n    from .idl import train\n")
    found = imported_modules(STYO / "probe.py", source)
    assert {"styo.world.render", "styo.book", "styo.book.viz", "styo.cli", "styo.idl"} <= found
    inside = imported_modules(STYO / "cli" / "__init__.py", "from .world import x\nfrom ..world import y\n")
    assert {"styo.cli.world", "styo.world"} <= inside


def test_cli_modules_import_one_another_without_a_circle():
    modules = {module_name(p): p for p in sorted((STYO / "cli").glob("*.py"))}
    graph = {
        name: {m for m in imported_modules(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                pytest.fail("import circle: " + " -> ".join([*trail[trail.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
    # the parser and main import the subcommands; the subcommands never import the parser
    assert all("styo.cli" not in graph[m] for m in graph if m != "styo.cli")


def test_the_public_api_is_importable_from_styo_and_import_styo_stays_light():
    import importlib
    import subprocess
    import sys

    import styo

    for name in styo.__all__:
        module = importlib.import_module(f"styo.{styo._API[name]}")
        assert getattr(styo, name) is getattr(module, name), name
    code = "import sys, styo; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        styo.nothing  # noqa: B018
