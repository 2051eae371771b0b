"""Property-based robustness (hypothesis): random bytes, unicode, huge and empty input to the
tokenizers, config loading (YAML text and ``--set`` overrides) and the CLI never produce a
traceback — only a result, a :class:`~dhian.errors.DhianError` or argparse's SystemExit — and
never hang (hypothesis deadlines, plus a SIGALRM guard that turns a real hang into a failure).
The HTTP endpoints (``dhian.serve``) are fuzzed with the server's own tests."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dhian import config
from dhian.cli import main
from dhian.errors import DhianError
from dhian.text import KINDS, Tokenizer, clean_text, load_tokenizer, normalize, train_tokenizer
from helpers.timing import Hang, time_limit

FAST = settings(
    max_examples=60,
    deadline=timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# any unicode text; random bytes read as UTF-8 the way files are (bad bytes → U+FFFD)
TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200)
RAW = st.binary(max_size=300).map(lambda b: b.decode("utf-8", errors="replace"))
# lone surrogates: what Python makes of undecodable argv bytes (surrogateescape) or JSON "\udc80"
SURROGATES = (
    st.binary(min_size=1, max_size=50)
    .map(lambda b: b.decode("utf-8", errors="surrogateescape"))
    .filter(lambda s: any(0xD800 <= ord(c) <= 0xDFFF for c in s))
)
CORPUS = [
    "the cat sat on the mat",
    "der Hund läuft schnell über die Straße",
    "ਧਿਆਨ ਮਕੈਨਿਜ਼ਮ ਅਤੇ ਟ੍ਰਾਂਸਫਾਰਮਰ",
    "attention is all you need 123 !?",
] * 5


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    return {kind: train_tokenizer(kind, CORPUS, 80, min_frequency=1) for kind in KINDS}


# --------------------------------------------------------------------------- tokenizers


@FAST
@given(text=st.one_of(TEXT, RAW), kind=st.sampled_from(KINDS))
def test_tokenizers_take_any_text(tokenizers: dict[str, Tokenizer], text: str, kind: str) -> None:
    tok = tokenizers[kind]
    with time_limit(10):
        try:
            ids = tok.encode(text, add_bos=True, add_eos=True)
        except DhianError:
            return
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert isinstance(tok.decode(ids), str)
        assert len(tok.tokens(text)) == len(ids) - 2
        assert tok.encode_batch([text, ""]) == [ids[1:-1], []]


@FAST
@given(text=SURROGATES, kind=st.sampled_from(KINDS))
def test_tokenizers_take_lone_surrogates(
    tokenizers: dict[str, Tokenizer], text: str, kind: str
) -> None:
    """A lone surrogate is read as U+FFFD by every encode path (no TypeError from HF)."""
    tok = tokenizers[kind]
    # the reference: the same text decoded the way files are (bad bytes → U+FFFD), built
    # independently of dhian.text.clean_text
    fixed = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    with time_limit(10):
        ids = tok.encode(text, add_bos=True, add_eos=True)
        assert ids == tok.encode(fixed, add_bos=True, add_eos=True)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.encode_batch([text, "ok"]) == [ids[1:-1], tok.encode("ok")]
        assert len(tok.tokens(text)) == len(ids) - 2
        assert "\ufffd" in normalize(text) or not normalize(fixed)
        text.encode("utf-8", "surrogatepass")  # the input really holds a surrogate …
        normalize(text).encode("utf-8")  # … and what dhian.text returns never does


@pytest.mark.parametrize("kind", KINDS)
def test_surrogate_pairs_and_training_text(kind: str) -> None:
    """A surrogate *pair* in a str (JSON ``"\\ud83d\\ude00"`` read without joining) is the
    character it encodes; training text with lone surrogates trains like U+FFFD text."""
    assert clean_text("a\udc80b\ud83d\ude00c\ud800") == "a\ufffdb\U0001f600c\ufffd"
    assert clean_text("plain ascii") == "plain ascii"
    texts = [t + " \udcff\udcfe" for t in CORPUS]
    tok = train_tokenizer(kind, texts, 80, min_frequency=1)
    ref = train_tokenizer(kind, [t + " \ufffd\ufffd" for t in CORPUS], 80, min_frequency=1)
    # (WordPiece numbers equal-count pieces in hash order, so compare token strings)
    assert set(tok.hf.get_vocab()) == set(ref.hf.get_vocab())
    assert tok.tokens("über \udcff") == ref.tokens("über \ufffd")
    assert tok.id_to_token(tok.token_to_id("\udcff") or 0) == ref.id_to_token(
        ref.token_to_id("\ufffd") or 0
    )


@FAST
@given(ids=st.lists(st.integers(min_value=0, max_value=2**31 - 1), max_size=50))
def test_decode_takes_any_id(tokenizers: dict[str, Tokenizer], ids: list[int]) -> None:
    for tok in tokenizers.values():
        with time_limit(10):
            try:
                assert isinstance(tok.decode(ids), str)
                assert len(tok.ids_to_tokens(ids)) == len(ids)
            except DhianError:
                pass


TOKENIZER_FILES = ["dhian_tokenizer.json", "tokenizer.json", "vocab.txt"]


@pytest.mark.parametrize("kind", KINDS)
def test_huge_and_empty_text(tokenizers: dict[str, Tokenizer], kind: str) -> None:
    tok = tokenizers[kind]
    with time_limit(30):
        assert tok.encode("") == [] and tok.decode([]) == ""
        huge = ("attention über alles ਧਿਆਨ " * 40_000)[:1_000_000]  # 1 M characters
        ids = tok.encode(huge)
        assert len(ids) > 10_000 and all(0 <= i < tok.vocab_size for i in ids[:1000])
        assert len(tok.encode("x" * 200_000)) >= 1  # one endless "word"


@FAST
@given(data=st.binary(max_size=400), name=st.sampled_from(TOKENIZER_FILES))
def test_load_tokenizer_from_garbage(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, name: str
) -> None:
    d = tmp_path_factory.mktemp("tok")
    (d / name).write_bytes(data)
    if name == "dhian_tokenizer.json":
        (d / "tokenizer.json").write_bytes(data[::-1])
    with time_limit(10), contextlib.suppress(DhianError):
        tok = load_tokenizer(d)
        assert isinstance(tok.encode("some text"), list)


# --------------------------------------------------------------------------- config


def _yaml_values() -> st.SearchStrategy[Any]:
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=20),
    )
    return st.recursive(
        leaf,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
        max_leaves=8,
    )


def _known_keys() -> list[str]:
    keys = [f"data.{f}" for f in config.DataConfig.__dataclass_fields__]
    keys += [f"train.{f}" for f in config.TrainConfig.__dataclass_fields__]
    return [*keys, "model.type", "model.dropout", "model.embed_dim", "model.num_heads"]


def _config_call(fn: Any, *args: Any) -> None:
    with time_limit(10), contextlib.suppress(DhianError):
        assert isinstance(fn(*args), (config.RunConfig, dict))


@FAST
@given(text=st.one_of(TEXT, RAW, _yaml_values().map(yaml.safe_dump)))
def test_config_file_with_any_text(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / "recipe.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    _config_call(config.load_run_config, path)


@FAST
@given(
    sections=st.dictionaries(
        st.sampled_from(["model", "data", "train", "other"]),
        st.dictionaries(
            st.sampled_from([k.split(".")[1] for k in _known_keys()] + ["typo"]),
            _yaml_values(),
            max_size=4,
        ),
        max_size=4,
    ),
    model_type=st.sampled_from([*config.model_types(), "nope"]),
)
def test_config_with_known_keys_and_any_values(
    tmp_path_factory: pytest.TempPathFactory, sections: dict[str, Any], model_type: str
) -> None:
    sections.setdefault("model", {})["type"] = model_type
    path = tmp_path_factory.mktemp("cfg") / "recipe.yaml"
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")
    _config_call(config.load_run_config, path)


OVERRIDE = st.one_of(
    TEXT,
    st.tuples(st.sampled_from(_known_keys()), TEXT).map("=".join),
    st.tuples(st.sampled_from(_known_keys()), _yaml_values().map(yaml.safe_dump)).map("=".join),
)


@FAST
@given(items=st.lists(OVERRIDE, max_size=4))
def test_set_overrides_with_any_text(recipe_file: Path, items: list[str]) -> None:
    _config_call(config.parse_overrides, items)
    _config_call(config.load_run_config, recipe_file, items)


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid recipe whose corpus does not exist (so a fuzzed ``train`` never trains)."""
    root = tmp_path_factory.mktemp("recipe")
    cfg = {
        "model": {"type": "rnnsearch", "embed_dim": 8, "hidden_dim": 8},
        "data": {"corpus": f"tsv:{root / 'missing'}", "tokenizer": "char", "vocab_size": 40},
        "train": {"out_dir": str(root / "run"), "max_steps": 2, "batch_size": 2},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- CLI

VERBS = [
    "train",
    "generate",
    "classify",
    "fill-mask",
    "tag",
    "answer",
    "import-hf",
    "export-hf",
    "data",
    "translate",
    "evaluate",
    "attention",
]
OPTIONS = [
    "--model", "--out", "--set", "--resume", "--quiet", "--prompt", "--top-k", "--beam",
    "--input", "--output", "--corpus", "--split", "--task", "--num-labels", "--labels",
    "--max-new-tokens", "--temperature", "--n", "--json", "--file", "--buckets", "--layer",
    "--head", "--length-penalty", "--batch-size", "--n-best", "--max-examples", "--seed",
    "--context", "--max-answer-len", "--stride", "--null-threshold",
    "list", "get", "info", "-h", "nan", "inf", "-1", "0", "1e309",
]  # fmt: skip
# argv words: any text but no '/', '~' (never touch the filesystem outside the test's directory)
# or ':' (corpus specs like hf:… would go to the network); no NUL (argv cannot hold it); no word
# longer than a file name may be (see test_cli_with_a_too_long_path)
WORD = st.one_of(
    st.text(
        alphabet=st.characters(min_codepoint=1, max_codepoint=0x10FFFF, blacklist_characters="/~:"),
        max_size=30,
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(OPTIONS),
)


PLACES = ["recipe.yaml", "empty", "garbage", "."]  # what cli_dir holds


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory: pytest.TempPathFactory, recipe_file: Path) -> Iterator[Path]:
    """Run the CLI inside a scratch dir holding the recipe, an empty dir and a garbage file."""
    d = tmp_path_factory.mktemp("cli")
    (d / "recipe.yaml").write_text(recipe_file.read_text(encoding="utf-8"), encoding="utf-8")
    (d / "empty").mkdir()
    (d / "garbage").write_bytes(b"\x00\xff" * 50)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr("sys.stdin", io.StringIO(""))
        yield d


LONG = "x" * 300  # longer than a file name may be (ENAMETOOLONG)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", LONG],
        ["generate", "--model", LONG],
        ["translate", "--model", LONG],
        ["import-hf", LONG, "out"],
        ["export-hf", LONG, "out"],
    ],
    ids=["train", "generate", "translate", "import-hf", "export-hf"],
)
def test_cli_with_a_too_long_path(cli_dir: Path, argv: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 2
    assert err.getvalue().startswith("error: file name too long (xxx")
    assert len(err.getvalue().strip().splitlines()) == 1


@settings(
    max_examples=150,
    deadline=timedelta(seconds=15),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    verb=st.one_of(st.sampled_from(VERBS), WORD),
    words=st.lists(st.one_of(WORD, st.sampled_from(PLACES)), max_size=6),
)
def test_cli_with_random_argv(cli_dir: Path, verb: str, words: list[str]) -> None:
    err = io.StringIO()
    with time_limit(30), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([verb, *words])
        except SystemExit as exc:  # argparse: bad usage (2) or --help (0)
            assert exc.code in (0, 2), exc.code
            return
    assert isinstance(code, int)
    text = err.getvalue()
    assert "Traceback" not in text
    if code == 2:
        assert text.startswith("error: ") and len(text.strip().splitlines()) == 1, text


def test_the_hang_guard_fires() -> None:
    """The guard these tests rely on really interrupts a call that does not return."""
    import time

    with pytest.raises(Hang, match=r"still running after 0\.1 s"), time_limit(0.1):
        time.sleep(5)
