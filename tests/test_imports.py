"""The import direction of docs/design.md, checked by parsing every module's imports with ast.

    text → data → nn → models (+ interop beside it) → decoding · metrics · viz → train → cli · serve

A module may import its own package and packages strictly to its left. ``dhian.errors``,
``dhian.config`` and ``dhian.models.configs`` are allowed everywhere; ``dhian.cli`` and
``dhian.serve`` may import anything. ``dhian.nn`` imports only the standard library, torch and
``dhian.errors`` (it never reads a config). Lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dhian"

# Rank of each top-level part of dhian. Equal ranks are peers and may not import each other.
LAYERS: dict[str, float] = {
    "text": 0,
    "data": 1,
    "nn": 2,
    "models": 3,
    "interop": 3.5,  # beside models: HF import/export builds our models
    "decoding": 4,
    "metrics": 4,
    "viz": 4,
    "train": 5,
    "cli": 6,
    "serve": 6,
    "__main__": 6,
}
ALLOWED_EVERYWHERE = ("dhian.errors", "dhian.config", "dhian.models.configs")
IMPORT_ANYTHING = ("cli", "serve", "__main__")
NN_THIRD_PARTY = {"torch"}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in ``tree`` (relative ones resolved)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from dhian import nn` / `from dhian.models import configs` name submodules
            found.extend(
                (node.lineno, f"{target}.{alias.name}")
                for alias in node.names
                if target in {"dhian", "dhian.models"} and not alias.name.startswith("__")
            )
    return found


def part_of(module: str) -> str:
    """Top-level part of a dhian module: dhian.nn.masks -> nn; dhian.metrics -> metrics."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """Wrong-way or forbidden imports of ``module`` whose code is ``source``."""
    tree = ast.parse(source)
    me = part_of(module)
    problems: list[str] = []
    for line, target in imported_modules(tree, module, is_package):
        top = target.split(".")[0]
        if me == "nn" and top != "dhian" and top not in sys.stdlib_module_names | NN_THIRD_PARTY:
            problems.append(f"{module}:{line} imports {target}: dhian.nn is torch-only")
        if top != "dhian" or target == "dhian":
            continue
        if me == "nn" and target.startswith(("dhian.config", "dhian.models")):
            problems.append(f"{module}:{line} imports {target}: dhian.nn never reads a config")
            continue
        if target.startswith(ALLOWED_EVERYWHERE) or me in IMPORT_ANYTHING:
            continue
        other = part_of(target)
        if other == me:
            continue
        if me in ("errors", "config", ""):
            problems.append(f"{module}:{line} imports {target}: {module} must stay at the bottom")
            continue
        if other not in LAYERS or me not in LAYERS:
            unknown = other if other not in LAYERS else me
            problems.append(f"{module}:{line}: dhian.{unknown} has no layer; add it to LAYERS")
            continue
        if LAYERS[other] >= LAYERS[me]:
            problems.append(
                f"{module}:{line} imports {target}: {me} (rank {LAYERS[me]}) may only import "
                f"layers to its left, not {other} (rank {LAYERS[other]})"
            )
    return problems


def test_checker_catches_wrong_way_arrows() -> None:
    assert violations("dhian.nn.blocks", "from dhian.models.bert import Bert")
    assert violations("dhian.nn.blocks", "import numpy")
    assert violations("dhian.nn.blocks", "from dhian.config import RunConfig")
    assert violations("dhian.data.batching", "def f():\n    from dhian.nn import masks")
    assert violations("dhian.models.gpt", "from ..train import engine")
    assert violations("dhian.viz.heatmap", "from dhian.decoding import beam")  # peers
    assert violations("dhian.models.gpt", "from dhian.interop import hf")
    assert violations("dhian.metrics", "from dhian import train")
    assert violations("dhian.errors", "from dhian.text import vocab")
    assert violations("dhian.models.gpt", "from dhian.mystery import x")
    assert violations("dhian.models.gpt", "from dhian import viz")


def test_checker_allows_the_right_arrows() -> None:
    ok = {
        "dhian.models.gpt": "from dhian.nn import blocks\nfrom ..errors import ConfigError\n"
        "from dhian.models.configs import GPTConfig\nfrom .outputs import Out\nimport torch",
        "dhian.interop.hf": "from dhian.models import bert\nimport safetensors",
        "dhian.train.engine": "from dhian import metrics\nfrom dhian.decoding import greedy",
        "dhian.cli.train": "from dhian.serve import app",
        "dhian.nn.masks": "import math\nimport torch\nfrom dhian.errors import DhianError",
        "dhian.config": "from dhian.errors import ConfigError",
        "dhian.metrics": "from dhian import __version__",
    }
    for module, source in ok.items():
        assert violations(module, source) == [], module


def test_resolves_relative_imports_in_packages() -> None:
    tree = ast.parse("from . import masks\nfrom .. import config")
    assert imported_modules(tree, "dhian.nn", is_package=True) == [
        (1, "dhian.nn"),
        (2, "dhian"),
        (2, "dhian.config"),
    ]


def test_every_module_imports_in_the_right_direction() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert files, f"no modules found under {SRC}"
    problems: list[str] = []
    for path in files:
        problems += violations(
            module_name(path), path.read_text(encoding="utf-8"), path.name == "__init__.py"
        )
    if problems:
        pytest.fail("wrong-way imports:\n" + "\n".join(problems))
