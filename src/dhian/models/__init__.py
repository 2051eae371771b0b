"""Model families, one folder each (``rnn/``, ``transformer/``, ``bert/``, ``gpt/``,
``keras_classifier/``: config.py, model.py, heads.py), their records and builder in
:mod:`dhian.models.families`, the model-dir format in :mod:`dhian.models.model_dir`, shared
output records (:mod:`dhian.models.outputs`) and precision (:mod:`dhian.models.precision`).

This package file imports nothing: the config layer imports the family ``config.py`` modules
through it and must not pull in torch.
"""
