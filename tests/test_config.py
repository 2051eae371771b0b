"""dhian.config: YAML load, --set overrides, unknown keys (with the nearest key), coercion."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from dhian.config import (
    DataConfig,
    RunConfig,
    TrainConfig,
    from_dict,
    load_run_config,
    load_yaml,
    merge,
    model_config_class,
    model_types,
    parse_overrides,
    run_config_from_dict,
)
from dhian.errors import ConfigError, DhianError

RECIPE = {
    "model": {"type": "rnnsearch", "cell": "lstm", "hidden_dim": 32},
    "data": {"corpus": "tsv:pairs.tsv", "vocab_size": 500},
    "train": {"lr": "3e-4", "max_steps": 10, "betas": [0.9, 0.99]},
}


def write(tmp_path: Path, data: object, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_load_yaml_builds_frozen_typed_config(tmp_path: Path) -> None:
    cfg = load_run_config(write(tmp_path, RECIPE))
    assert isinstance(cfg, RunConfig)
    model: Any = cfg.model
    assert type(cfg.model) is model_config_class("rnnsearch")
    assert model.cell == "lstm" and model.hidden_dim == 32
    assert cfg.data.vocab_size == 500 and cfg.data.tokenizer == DataConfig().tokenizer
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.betas == (0.9, 0.99)
    assert cfg.train.seed == TrainConfig().seed
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]
    assert {"rnnencdec", "rnnsearch"} <= set(model_types())


def test_set_overrides_win_and_parse_values(tmp_path: Path) -> None:
    path = write(tmp_path, RECIPE)
    cfg = load_run_config(
        path,
        [
            "train.lr=1e-3",
            "model.hidden_dim=64",
            "train.bf16=true",
            "data.corpus=files:a.de,a.en",
            "train.betas=[0.8, 0.9]",
        ],
    )
    assert cfg.train.lr == pytest.approx(1e-3)
    model: Any = cfg.model
    assert model.hidden_dim == 64 and model.cell == "lstm"
    assert cfg.train.bf16 is True
    assert cfg.data.corpus == "files:a.de,a.en"
    assert cfg.train.betas == (0.8, 0.9)
    assert parse_overrides(["a.b.c=1", "a.b.d=x"]) == {"a": {"b": {"c": 1, "d": "x"}}}
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.lr"])


def test_round_trip_through_save(tmp_path: Path) -> None:
    cfg = load_run_config(write(tmp_path, RECIPE), ["train.max_steps=7"])
    cfg.save(tmp_path / "config.yaml")
    again = load_run_config(tmp_path / "config.yaml")
    assert again == cfg


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("train.lrr=1", r"unknown config key 'train.lrr' \(did you mean 'lr'\?\)"),
        (
            "model.hiden_dim=3",
            r"unknown config key 'model.hiden_dim' \(did you mean 'hidden_dim'\?\)",
        ),
        ("data.vocab_sise=3", r"did you mean 'vocab_size'"),
        ("trian.lr=1", r"unknown config section 'trian' \(did you mean 'train'\?\)"),
        ("model.type=rnnsaerch", r"unknown model.type 'rnnsaerch' \(did you mean 'rnnsearch'\?\)"),
    ],
)
def test_unknown_keys_suggest_nearest(tmp_path: Path, override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_run_config(write(tmp_path, RECIPE), [override])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("train.max_steps=ten", r"train.max_steps must be an integer, got 'ten'"),
        ("train.max_steps=2.5", r"train.max_steps must be an integer"),
        ("train.max_steps=true", r"train.max_steps must be an integer, got True"),
        ("train.lr=fast", r"train.lr must be a number, got 'fast'"),
        ("train.bf16=maybe", r"train.bf16 must be true, false or auto, got 'maybe'"),
        ("train.betas=0.9", r"train.betas must be a list"),
        ("train.betas=[0.9]", r"train.betas must have 2 items, got 1"),
    ],
)
def test_type_coercion_errors(tmp_path: Path, override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_run_config(write(tmp_path, RECIPE), [override])


def test_lossless_coercions() -> None:
    train = from_dict(TrainConfig, {"lr": 1, "max_steps": 5.0, "bf16": "yes", "clip_norm": "2"})
    assert train.lr == 1.0 and isinstance(train.lr, float)
    assert train.max_steps == 5 and isinstance(train.max_steps, int)
    assert train.bf16 is True and train.clip_norm == 2.0
    assert from_dict(DataConfig, {"corpus": 123}).corpus == "123"


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        load_yaml(empty)
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(write(tmp_path, [1, 2]))
    with pytest.raises(ConfigError, match=r"model\.type is required"):
        run_config_from_dict({"train": {"lr": 1e-3}})
    assert issubclass(ConfigError, DhianError) and issubclass(ConfigError, ValueError)
