"""Foreign checkpoints in and out: HuggingFace dirs (BERT in :mod:`dhian.interop.hf_bert`,
Marian for the translation transformer in :mod:`dhian.interop.hf_marian`, dispatch by family
record in :mod:`dhian.interop.hf_dirs`). Weights only, safetensors only — pickled checkpoints
are refused. Sits above :mod:`dhian.models` (importers build our models); this package file
imports nothing, so loading BERT never imports Marian.
"""
