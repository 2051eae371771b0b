"""dhian.inference.load: the one loader — run dir → best/ (else last/), HF dir, dhian dir, a
single-file checkpoint or a built-in name through a family record — and every verb taking
``--model`` accepting a run dir."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from dhian.cli import main
from dhian.errors import ConfigError, ModelLoadError
from dhian.inference.load import load_model, resolve_model_dir
from dhian.models import families
from dhian.models.model_dir import CONFIG, read_metadata
from helpers import toy_family


def run_dir(model: Path, root: Path, subs: tuple[str, ...] = ("best",)) -> Path:
    """A training run dir (``config.yaml`` + ``best/``/``last/``) around a saved model dir."""
    root.mkdir(parents=True)
    shutil.copy(model / CONFIG, root / CONFIG)
    for sub in subs:
        shutil.copytree(model, root / sub)
    return root


def test_a_run_dir_means_best_else_last(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    model = tiny_dirs["transformer"]
    both = run_dir(model, tmp_path / "both", ("best", "last"))
    assert resolve_model_dir(both) == both / "best"
    only_last = run_dir(model, tmp_path / "last", ("last",))
    assert resolve_model_dir(only_last) == only_last / "last"
    assert load_model(only_last).kind == "translation"
    assert resolve_model_dir(model) == model
    empty = run_dir(model, tmp_path / "empty", ())
    with pytest.raises(ModelLoadError, match="no checkpoint yet"):
        load_model(empty)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_device_and_precision_are_chosen_once(tiny_dirs: dict[str, Path]) -> None:
    loaded = load_model(tiny_dirs["gpt"], device="auto", dtype="bf16")
    assert not loaded.model.training
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="fp8"):
        load_model(tiny_dirs["gpt"], dtype="fp8")


def test_a_new_family_is_one_record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A record naming a file importer and a built-in is all the loader needs (the way the LLaMA
    family adds ``.gguf`` files and names like ``smollm2``)."""
    gpt = families.family_of("gpt")
    toy = dataclasses.replace(
        gpt,
        name="toy",
        model_types=("toy",),
        file_import={".toy": "helpers.toy_family:load_toy_file"},
        builtins={"toy-tiny": "helpers.toy_family:load_toy_builtin"},
    )
    monkeypatch.setattr(families, "FAMILIES", (*families.FAMILIES, toy))
    toy_family.CALLS.clear()
    checkpoint = tmp_path / "weights.TOY"
    checkpoint.write_bytes(b"")
    assert load_model(checkpoint, flavour="x").build_kwargs["flavour"] == "x"
    assert load_model("toy-tiny").kind == "lm"
    assert toy_family.CALLS == [("file", "weights.TOY"), ("builtin", "toy-tiny")]
    with pytest.raises(ModelLoadError, match="toy-tiny"):
        load_model("toy-tinny")


# --------------------------------------------------------------------------- every verb


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode()), "utf-8"))


VERBS: dict[str, tuple[str, list[str], str]] = {
    # verb: (tiny model kind, arguments after --model RUN, stdin)
    "translate": ("transformer", [], "Und es ward Licht.\n"),
    "classify": ("bert-cls", [], "a good film\n"),
    "fill-mask": ("bert-mlm", ["the light <mask> good"], ""),
    "generate": ("gpt", ["--prompt", "In", "--max-new-tokens", "3", "--seed", "0"], ""),
    "attention": ("rnnsearch", ["Und es ward Licht.", "--out", "{out}"], ""),
}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_model_verb_takes_a_run_dir(
    verb: str,
    tiny_dirs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kind, rest, stdin = VERBS[verb]
    run = run_dir(tiny_dirs[kind], tmp_path / "runs" / "x")
    _stdin(monkeypatch, stdin)
    args = [a.replace("{out}", str(tmp_path / "att")) for a in rest]
    if verb == "fill-mask":
        mask = "[MASK]" if "[MASK]" in str(tiny_dirs[kind]) else "<mask>"
        args = [args[0].replace("<mask>", mask)]
    assert main([verb, "--model", str(run), *args]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out


def test_export_hf_takes_a_run_dir(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    """`dhian export-hf runs/X OUT` exports runs/X/best (it used to ask for a model dir)."""
    run = run_dir(tiny_dirs["bert-mlm"], tmp_path / "runs" / "quickstart")
    assert main(["export-hf", str(run), str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "bert"
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_serve_and_evaluate_load_through_the_same_loader(
    tiny_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dhian.serve.server

    run = run_dir(tiny_dirs["gpt"], tmp_path / "runs" / "g")
    seen: dict[str, Any] = {}

    def fake_run_server(model_dir: str, *args: Any, loaded: Any = None, **kw: Any) -> None:
        seen["kind"], seen["meta"] = loaded.kind, read_metadata(resolve_model_dir(model_dir))

    monkeypatch.setattr(dhian.serve.server, "run_server", fake_run_server)
    assert main(["serve", "--model", str(run)]) == 0
    assert seen["kind"] == "lm" and seen["meta"]["model_type"] == "gpt"
