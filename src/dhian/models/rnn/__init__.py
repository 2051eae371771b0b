"""The rnn model family: config.py (its frozen config), model.py and heads.py (torch).

This package file imports nothing, so importing the config never imports torch.
"""
