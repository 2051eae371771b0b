"""dhian.models.families: one record per family, read by every layer, agreeing with the config
layer's table of model types."""

from __future__ import annotations

import pytest

from dhian import config
from dhian.errors import ConfigError
from dhian.models import families
from dhian.models.families import (
    FAMILIES,
    KINDS,
    TASKS,
    build_model,
    family_for_builtin,
    family_for_hf_type,
    family_for_suffix,
    family_of,
)


def test_records_and_the_config_layer_name_the_same_model_types() -> None:
    from_records = {t: f.config_class for f in FAMILIES for t in f.model_types}
    assert from_records == config._MODEL_CONFIGS
    assert len(from_records) == sum(len(f.model_types) for f in FAMILIES)  # no type twice
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)


def test_every_record_is_well_formed_and_its_importers_resolve() -> None:
    for f in FAMILIES:
        assert f.kind in KINDS and f.task in TASKS, f.name
        assert set(f.attention_types) <= set(f.model_types), f.name
        for target in (f.hf_import, f.hf_export, *f.file_import.values(), *f.builtins.values()):
            if target is not None:
                assert callable(families.resolve(target)), target
        assert bool(f.hf_model_types) == (f.hf_import is not None), f.name


def test_lookups() -> None:
    assert family_of("rnnencdec") is family_of("rnnsearch")
    assert family_of("rnnsearch").has_attention("rnnsearch")
    assert not family_of("rnnencdec").has_attention("rnnencdec")
    assert family_of("gpt").kind == "causal_lm" and family_of("gpt").can_generate
    assert family_of("transformer").can_translate and not family_of("bert").can_translate
    assert family_for_hf_type("marian") is family_of("transformer")
    assert family_for_hf_type("bert") is family_of("bert")
    assert family_for_hf_type("llama") is family_of("llama")
    assert family_for_hf_type("gpt2") is None
    assert family_for_suffix(".GGUF") is family_of("llama")
    assert family_for_builtin("smollm2") is family_of("llama")
    with pytest.raises(ConfigError, match="'rnnsearch'"):
        family_of("rnnserch")


def test_build_model_reads_the_record() -> None:
    cfg = config.model_config_class("gpt")(n_layer=1, n_head=2, n_embd=8, block_size=8)
    model = build_model(cfg, 13)
    assert model.__class__.__name__ == "GPT"
    with pytest.raises(ConfigError, match="no model family"):
        build_model(type("C", (), {"type": "nope"})(), 13)


def test_a_family_with_an_unknown_kind_is_refused() -> None:
    f = FAMILIES[0]
    with pytest.raises(ValueError, match="kind"):
        families.Family(f.name, f.model_types, f.config_class, f.build, "decoder", f.task)
