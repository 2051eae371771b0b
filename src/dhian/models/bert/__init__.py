"""The bert model family: config.py (its frozen config), model.py, heads.py and token_heads.py
(torch).

This package file imports nothing, so importing the config never imports torch.
"""
