"""The import direction of docs/design.md and the absence of import cycles, checked by parsing
every module's imports with ast (imports inside functions count too)::

    errors · config (+ models/<family>/config.py)       the bottom: stdlib, PyYAML
    text · nn                                           roots (nn: torch only)
      → data → models → interop → decoding · metrics · viz → inference → train
        → apps · serve → cli

A module may import its own package and layers strictly below its own. Equal ranks are peers
and may not import each other. ``cli`` sits above ``serve`` and ``apps`` because ``dhian serve``
and ``dhian quickstart`` are verbs; nothing imports ``cli``. A family's ``config.py`` belongs to
the config layer although it lives in its family folder (the config layer parses ``model:``).
Any file-level cycle — two modules that import each other, directly or around a loop, at the
top or inside functions — fails, in every package. Imports sit at the module top: outside the
CLI's verb handlers a dhian import inside a function needs a comment giving the reason.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dhian"

# Rank of each part of dhian. Equal ranks are peers and may not import each other.
LAYERS: dict[str, float] = {
    "errors": 0,
    "config": 0.5,  # dhian.config and every dhian.models.<family>.config
    "": 0.5,  # the package file (__version__)
    "text": 1,
    "nn": 1,
    "data": 2,
    "models": 3,
    "interop": 4,
    "decoding": 5,
    "metrics": 5,
    "viz": 5,
    "inference": 6,  # below train: training evaluates by translating as `dhian translate` does
    "train": 7,
    "apps": 8,
    "serve": 8,
    "cli": 9,
    "__main__": 10,
}
NN_THIRD_PARTY = {"torch"}
CONFIG_THIRD_PARTY = {"yaml"}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(
    tree: ast.AST, module: str, is_package: bool, known: set[str] | None = None
) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in ``tree`` (relative ones resolved).

    ``from P import name`` is an import of the module ``P.name`` when that is a module, else of
    ``P``. ``known`` is the set of real module names; without it both are returned.
    """
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
            subs = [
                f"{target}.{alias.name}"
                for alias in node.names
                if target.startswith("dhian") and not alias.name.startswith("__")
            ]
            if known is None:
                found.append((node.lineno, target))
                found.extend((node.lineno, sub) for sub in subs)
                continue
            modules = [sub for sub in subs if sub in known]
            found.extend((node.lineno, sub) for sub in modules)
            if len(modules) < len(node.names):  # some names are attributes of the module
                found.append((node.lineno, target))
    return found


def part_of(module: str) -> str:
    """Layer of a dhian module: dhian.nn.masks -> nn; dhian.models.gpt.config -> config."""
    parts = module.split(".")
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "config":
        return "config"
    return parts[1] if len(parts) > 1 else ""


def violations(
    module: str, source: str, is_package: bool = False, known: set[str] | None = None
) -> list[str]:
    """Wrong-way or forbidden imports of ``module`` whose code is ``source``.

    ``known``: the real module names; a ``from P import name`` candidate that is not one of them
    is an attribute of ``P``, not a module, and is skipped (when None, every candidate counts).
    """
    tree = ast.parse(source)
    me = part_of(module)
    problems: list[str] = []
    for line, target in imported_modules(tree, module, is_package, known):
        top = target.split(".")[0]
        if me == "nn" and top != "dhian" and top not in sys.stdlib_module_names | NN_THIRD_PARTY:
            problems.append(f"{module}:{line} imports {target}: dhian.nn is torch-only")
        config_ok = sys.stdlib_module_names | CONFIG_THIRD_PARTY | {"dhian"}
        if me in ("errors", "config") and top not in config_ok:
            problems.append(f"{module}:{line} imports {target}: the config layer is stdlib")
        if top != "dhian" or target == "dhian":
            continue
        if me == "nn" and not target.startswith(("dhian.nn", "dhian.errors")):
            problems.append(f"{module}:{line} imports {target}: dhian.nn imports only errors")
            continue
        other = part_of(target)
        if other == me:
            continue
        if other not in LAYERS or me not in LAYERS:
            unknown = other if other not in LAYERS else me
            problems.append(f"{module}:{line}: dhian.{unknown} has no layer; add it to LAYERS")
            continue
        if LAYERS[other] >= LAYERS[me]:
            problems.append(
                f"{module}:{line} imports {target}: {me or 'dhian'} (rank {LAYERS[me]}) may only "
                f"import layers below it, not {other or 'dhian'} (rank {LAYERS[other]})"
            )
    return problems


def edges(sources: Mapping[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module graph: ``{module: {dhian modules it imports}}`` over ``{module: (source, is_pkg)}``.

    ``from dhian.text import load_tokenizer`` is an edge to ``dhian.text``; ``from dhian.models
    import model_dir`` one to ``dhian.models.model_dir`` only (the package file it runs first is
    not counted: every submodule import would otherwise be one).
    """
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        targets = imported_modules(ast.parse(source), module, is_package, set(sources))
        graph[module] = {t for _, t in targets if t in sources and t != module}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one
    module (Tarjan's algorithm, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def all_sources() -> dict[str, tuple[str, bool]]:
    files = sorted(SRC.rglob("*.py"))
    assert files, f"no modules found under {SRC}"
    return {module_name(p): (p.read_text(encoding="utf-8"), p.name == "__init__.py") for p in files}


# --------------------------------------------------------------------------- the checker


def test_checker_catches_wrong_way_arrows() -> None:
    assert violations("dhian.nn.blocks", "from dhian.models.bert.model import Bert")
    assert violations("dhian.nn.blocks", "import numpy")
    assert violations("dhian.nn.blocks", "from dhian.config import RunConfig")
    assert violations("dhian.nn.blocks", "from dhian.text import Tokenizer")  # peers
    assert violations("dhian.data.batching", "def f():\n    from dhian.models import families")
    assert violations("dhian.models.gpt.model", "from ...train import engine")
    assert violations("dhian.viz.heatmap", "from dhian.decoding import beam")  # peers
    assert violations("dhian.models.gpt.model", "from dhian.interop import hf_dirs")
    assert violations("dhian.metrics", "from dhian import train")
    assert violations("dhian.errors", "from dhian.text import vocab")
    assert violations("dhian.config", "import torch")
    assert violations("dhian.config", "from dhian.models.families import FAMILIES")
    assert violations("dhian.models.bert.config", "import torch")
    assert violations("dhian.models.bert.config", "from dhian.models.bert import model")
    assert violations("dhian.models.gpt.model", "from dhian.mystery import x")
    assert violations("dhian.models.gpt.model", "from dhian import viz")
    assert violations("dhian.inference.load", "from dhian.train import trainer")
    assert violations("dhian.train.trainer", "from dhian.serve import app")
    assert violations("dhian.serve.app", "from dhian.cli import main")  # no exemption
    assert violations("dhian.serve.app", "from dhian.apps.quickstart import run")  # peers
    assert violations("dhian.apps.quickstart", "from dhian.cli.train import run")


def test_checker_allows_the_right_arrows() -> None:
    ok = {
        "dhian.models.gpt.model": "from dhian.nn import blocks\nfrom ..errors import ConfigError\n"
        "from dhian.models.gpt.config import GPTConfig\nfrom ..outputs import Out\nimport torch",
        "dhian.interop.hf_bert": "from dhian.models.bert import model\nimport safetensors",
        "dhian.train.trainer": "from dhian import metrics\nfrom dhian.decoding import greedy",
        "dhian.cli.serve": "from dhian.serve import server",
        "dhian.cli.quickstart": "from dhian.apps.quickstart import run_quickstart",
        "dhian.serve.app": "from dhian.inference import capabilities",
        "dhian.nn.masks": "import math\nimport torch\nfrom dhian.errors import DhianError",
        "dhian.config": "import yaml\nfrom dhian.errors import ConfigError\n"
        "from dhian.models.bert.config import BertConfig",
        "dhian.metrics": "from dhian import __version__",
    }
    for module, source in ok.items():
        assert violations(module, source) == [], module


def test_resolves_relative_imports_in_packages() -> None:
    tree = ast.parse("from . import masks\nfrom .. import config")
    assert imported_modules(tree, "dhian.nn", is_package=True) == [
        (1, "dhian.nn"),
        (1, "dhian.nn.masks"),
        (2, "dhian"),
        (2, "dhian.config"),
    ]


def test_checker_catches_a_synthetic_cycle() -> None:
    sources = {
        "dhian.a": ("from dhian.b import x", False),
        "dhian.b": ("def f():\n    from dhian.c import y", False),  # inside a function
        "dhian.c": ("import dhian.a", False),
        "dhian.d": ("from dhian import a", False),  # into the cycle, not part of it
        "dhian.p": ("from dhian.p.q import z", True),
        "dhian.p.q": ("from dhian.p import w", False),  # a package and its module
        "dhian.p.r": ("from . import q", False),  # names the module q: no edge to dhian.p
    }
    assert cycles(edges(sources)) == [["dhian.a", "dhian.b", "dhian.c"], ["dhian.p", "dhian.p.q"]]
    assert cycles(edges({k: v for k, v in sources.items() if k != "dhian.c"})) == [
        ["dhian.p", "dhian.p.q"]
    ]


def test_names_that_are_not_modules_make_no_edge() -> None:
    sources = {
        "dhian.text": ("from dhian.text.tokenizer import load_tokenizer", True),
        "dhian.text.tokenizer": ("def load_tokenizer(): ...", False),
        "dhian.text.training": ("from dhian.text.tokenizer import load_tokenizer", False),
    }
    assert edges(sources)["dhian.text.training"] == {"dhian.text.tokenizer"}
    assert cycles(edges(sources)) == []


# --------------------------------------------------------------------------- the code


def test_every_module_imports_in_the_right_direction() -> None:
    sources = all_sources()
    problems: list[str] = []
    for module, (source, is_package) in sources.items():
        problems += violations(module, source, is_package, known=set(sources))
    if problems:
        pytest.fail("wrong-way imports:\n" + "\n".join(problems))


def test_no_module_is_part_of_an_import_cycle() -> None:
    found = cycles(edges(all_sources()))
    if found:
        pytest.fail("import cycles:\n" + "\n".join(" <-> ".join(c) for c in found))


def test_the_config_layer_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, dhian.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def lazy_imports(source: str) -> list[int]:
    """Lines of dhian imports inside functions (or under ``if``) that carry no comment."""
    tree = ast.parse(source)
    top = {id(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)}
    lines = source.splitlines()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in top:
            continue
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        internal = (isinstance(node, ast.ImportFrom) and node.level > 0) or any(
            n.startswith("dhian") for n in names
        )
        text = lines[node.lineno - 1 : node.end_lineno]
        if internal and not any("#" in line for line in text):
            found.append(node.lineno)
    return found


def test_lazy_import_checker() -> None:
    assert lazy_imports("def f():\n    from dhian.text import x") == [2]
    assert lazy_imports("def f():\n    from dhian.text import x  # heavy: reason") == []
    assert lazy_imports("from dhian.text import x\ndef f():\n    import json") == []


def test_library_imports_sit_at_the_top() -> None:
    """Outside dhian.cli (whose verb handlers import their dependencies when run, so that
    ``dhian --help`` stays instant: said once in dhian/cli/__init__.py), a dhian import inside a
    function needs a comment saying why it is lazy."""
    problems = [
        f"{module}:{line}"
        for module, (source, _) in all_sources().items()
        if not module.startswith("dhian.cli")
        for line in lazy_imports(source)
    ]
    assert not problems, "imports inside functions without a reason:\n" + "\n".join(problems)
