"""The llama model family (SmolLM2, Llama 2/3 layouts): config.py (its frozen config) and
model.py (torch: the decoder, its static KV cache and :func:`build_llama`).

This package file imports nothing, so importing the config never imports torch.
"""
