"""The code a stage runs: its file and every module of `pipeline` it imports, directly or not, at any depth.

dvc.yaml's code deps of each stage are exactly this list (tests/test_dvc_yaml.py compares), and the resume
fingerprint hashes it, so editing a module reruns, or restarts, only the stages that import it. Imports inside
functions count (the stages import TensorFlow's modules late, but they still run them); imports under
`if TYPE_CHECKING:` do not (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pipeline"


def _module_file(dotted: str) -> Path | None:
    """The file of module `dotted` (`pipeline.io.atomic`), or None where it names no module (a function)."""
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    pending = [tree]
    while pending:
        node = pending.pop()
        if _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pipeline import cli`
        pending.extend(ast.iter_child_nodes(node))
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _with_packages(dotted: str) -> list[str]:
    """Importing `pipeline.io.atomic` runs `pipeline/__init__.py` and `pipeline/io/__init__.py` first."""
    parts = dotted.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


def import_closure(entry: Path) -> list[Path]:
    """`entry` and every file of `pipeline` it imports, transitively, relative to the project root, sorted."""
    seen: set[Path] = set()
    pending = [entry.resolve()]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for dotted in _imported_modules(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for name in _with_packages(dotted):
                module = _module_file(name)
                if module is not None and module not in seen:
                    pending.append(module)
    return sorted(path.relative_to(ROOT) for path in seen)
