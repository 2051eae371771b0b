"""The tiny en→de corpus, RNNsearch recipe and run helpers of the training tests; they live in
:mod:`helpers.corpus` and :mod:`helpers.training` (shared with other test folders) and are
re-exported here for the modules that import ``tiny_corpus``."""

from __future__ import annotations

from helpers.corpus import WORDS, corpus, recipe
from helpers.training import TIMING, rows, same_weights, wait_for, weights

__all__ = ["TIMING", "WORDS", "corpus", "recipe", "rows", "same_weights", "wait_for", "weights"]
