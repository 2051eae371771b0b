"""Fixtures of tests/models: ``trained``, the tiny Transformer overfitted on the 20 toy pairs
(trained once per package run, shared by the transformer test modules)."""

from __future__ import annotations

import pytest

from dhian.models.transformer.model import TransformerSeq2Seq
from helpers.transformer import train_tiny


@pytest.fixture(scope="package")
def trained() -> TransformerSeq2Seq:
    """A tiny model overfitted on the 20 toy pairs (a few seconds on one CPU core)."""
    return train_tiny()
