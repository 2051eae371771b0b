"""Helpers shared by tests in several folders, imported as ``helpers.<module>``.

``tests/`` is on ``sys.path`` under pytest's default (prepend) import mode, because it holds the
suite's root ``conftest.py``. Modules: ``threads`` (one-torch-thread fixtures), ``corpus`` (a tiny
generated en→de word-swap corpus and RNNsearch recipe), ``training`` (quiet trainers, exact-resume
check, ``metrics.jsonl`` rows, weight comparison), ``bert`` (a tiny WordPiece vocab and BERT
config), ``browser`` (headless Chromium for Playwright tests), ``transformer`` (a tiny encoder-decoder,
its toy pairs and an uncached reference step model).
"""
