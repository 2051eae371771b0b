"""The one entry point to every corpus: :func:`load_corpus` and :func:`corpus_info`.

Spec strings (``DataConfig.corpus``): built-ins ``bible:SRC-TGT``, ``bible:LANG``,
``rotten-tomatoes``, ``news`` (see :mod:`dhian.data.builtin_corpora`), and local ``KIND:PATH`` specs
(see :mod:`dhian.data.local_files`, :mod:`dhian.data.standard_sets`). Imports: :mod:`dhian.data` (builtin_corpora,
local_files, standard_sets),
:mod:`dhian.data.corpus`, :mod:`dhian.errors`; no torch.
"""

from __future__ import annotations

from dhian.data import builtin_corpora, local_files, standard_sets
from dhian.data.corpus import SPLITS, AnyCorpus, CorpusInfo, check_split, split_tokens
from dhian.errors import DataError, nearest


def load_corpus(
    spec: str,
    split: str,
    quiet: bool = False,
    text_column: str = "text",
    label_column: str = "label",
) -> AnyCorpus:
    """One split (``train``/``dev``/``test``) of the corpus named by ``spec``.

    Returns a :class:`~dhian.data.corpus.ParallelCorpus` (pairs),
    :class:`~dhian.data.corpus.TextClassificationCorpus` ((text, label) examples) or
    :class:`~dhian.data.corpus.MonolingualCorpus` (documents). ``text_column``/``label_column``
    name the columns of ``csv:``/``jsonl:`` classification files.
    """
    check_split(split)
    _check_known(spec)
    if builtin_corpora.is_builtin(spec):
        return builtin_corpora.load_builtin(spec, split, quiet=quiet)
    return _load_local(spec, split, text_column, label_column)


def corpus_info(
    spec: str, quiet: bool = False, text_column: str = "text", label_column: str = "label"
) -> CorpusInfo:
    """Sizes and whitespace-token counts per split (and source/license for built-ins)."""
    _check_known(spec)
    if builtin_corpora.is_builtin(spec):
        return builtin_corpora.builtin_info(spec, quiet=quiet)
    sizes: dict[str, int] = {}
    tokens: dict[str, dict[str, int]] = {}
    kind = "?"
    for split in SPLITS:
        c = _load_local(spec, split, text_column, label_column)
        kind = c.kind
        sizes[split] = len(c)
        tokens[split] = split_tokens(c)
    return CorpusInfo(
        spec, kind, f"local files ({spec})", "as stated by the files' owner", sizes, tokens
    )


def _load_local(spec: str, split: str, text_column: str, label_column: str) -> AnyCorpus:
    """A split of a local ``KIND:PATH`` corpus: a standard set or a generic format."""
    check_split(split)
    kind, path, langs = local_files.parse_local_spec(spec)
    if kind in local_files.STANDARD:
        return standard_sets.load_standard(kind, path, split, langs, spec)
    return local_files.load_local(spec, split, text_column, label_column)


def _check_known(spec: str) -> None:
    """A spec without ``KIND:`` must be a built-in name; suggest the nearest one."""
    if ":" in spec or builtin_corpora.is_builtin(spec):
        return
    raise DataError(
        f"unknown corpus {spec!r}{nearest(spec, builtin_corpora.builtin_names())}; run `dhian data list` "
        "for built-ins, or use a local spec KIND:DIR (tsv, files, jsonl, csv, text, multi30k, "
        "iwslt, agnews, wikitext, hf)"
    )
