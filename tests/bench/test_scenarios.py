"""The ``bert-base-32x128`` and ``gpt-generate-b8`` scenarios and the optional peers (ONNX
Runtime, CTranslate2) in ``--quick`` mode: the JSON they write, dhian = HF on the same weights,
the peers' outputs against dhian's, the analytic FLOPs, best-of and unavailable-peer ratios.
Correctness only: no timing is asserted. Tests of a missing optional peer skip."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``bench`` is a top-level folder of the checkout, not part of the installed package."""
    monkeypatch.syspath_prepend(str(ROOT))
    torch.set_num_threads(1)
    yield


def quick_run(tmp_path: Path, scenario: str) -> tuple[dict[str, Any], str]:
    """Run ``scenario`` with ``--quick`` (2 timed runs, 1 thread); its JSON and Markdown."""
    import bench.bert
    import bench.gpt
    import bench.train  # noqa: F401
    from bench.harness import main

    args = [scenario, "--quick", "--runs", "2", "--warmup", "1", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / f"{scenario}.json").read_text())
    return res, (tmp_path / f"{scenario}.md").read_text()


def check_common(res: dict[str, Any], scenario: str, unit: str) -> None:
    """The fixed schema, consistent medians/min-max and ratios = medians' quotients."""
    assert list(res)[:10] == [
        "scenario", "unit", "median", "minmax", "ratio", "runs", "threads", "peak_gflops",
        "command", "date",
    ]  # fmt: skip
    assert list(res)[10:] == ["cpu", "best", "unavailable"]
    assert res["cpu"].split(",")[0].strip()  # the model name, then the speed flags
    assert res["scenario"] == scenario and res["unit"] == unit and res["runs"] == 2
    assert set(res["median"]) == set(res["minmax"])
    for name, (lo, hi) in res["minmax"].items():
        assert 0 < lo <= res["median"][name] <= hi
    for key, value in res["ratio"].items():
        if "/" not in key:  # a fraction of the matmul peak (e.g. mfu-fp32)
            assert value is None or value > 0
            continue
        a, b = key.split("/")
        if value is not None:
            assert value == pytest.approx(res["median"][a] / res["median"][b], rel=1e-3)


# --------------------------------------------------------------------------- BERT


def test_bert_quick_run_json_and_report(tmp_path: Path) -> None:
    res, md = quick_run(tmp_path, "bert-base-32x128")
    check_common(res, "bert-base-32x128", "sent/s")
    ours = {"dhian-fp32", "hf-fp32", "dhian-bf16", "hf-bf16", "dhian-int8"}
    ours |= {"dhian-int8-dynamic", "dhian-bf16-plain"}
    peers = {"ort-fp32", "ort-int8"}
    assert set(res["ratio"]) == {
        "dhian-fp32/hf-fp32", "dhian-bf16/hf-bf16", "dhian-int8/ort-int8", "dhian-fp32/ort-fp32",
        "dhian-int8/dhian-int8-dynamic", "dhian-bf16/dhian-bf16-plain",
    }  # fmt: skip
    if res["unavailable"]:  # onnxruntime missing or its export failed: said, not faked
        assert set(res["unavailable"]) == peers and set(res["median"]) == ours
        assert res["ratio"]["dhian-int8/ort-int8"] is None and "Peers not run here" in md
    else:
        assert set(res["median"]) == ours | peers
        assert res["ratio"]["dhian-int8/ort-int8"] is not None
    assert "hf-fp32 vs dhian-fp32: last hidden max abs diff" in md and "| dhian-int8 |" in md


def test_bert_dhian_equals_hf_on_the_same_weights() -> None:
    from bench.bert import QUICK, build_pair, dhian_encode, hf_encode, rel_error

    from dhian.models.precision import apply_precision

    model, hf, _ = build_pair(QUICK, seed=2)
    h, p = dhian_encode(model, QUICK)
    h_hf, p_hf = hf_encode(hf, QUICK)
    assert torch.allclose(h, h_hf, atol=1e-5) and torch.allclose(p, p_hf, atol=1e-5)
    assert h.shape == (QUICK.batch, QUICK.length, QUICK.d) and h.std() > 0.1
    h8, _ = dhian_encode(apply_precision(model, "int8"), QUICK)
    assert 0 < rel_error(h8, h) < 0.05


def test_bert_onnx_runtime_peer_matches_hf(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from bench.bert import QUICK, build_pair, hf_encode, ort_encode, rel_error

    from bench import ort

    _, hf, folder = build_pair(QUICK, seed=3)
    files = ort.export(folder / "hf", tmp_path / "onnx", QUICK.heads, QUICK.d)
    assert ort.fused_ops(files["fp32"]).get("Attention") == QUICK.layers  # ORT's fusions ran
    assert ort.fused_ops(files["int8"]).get("QAttention") == QUICK.layers
    h_hf, p_hf = hf_encode(hf, QUICK)
    h32, p32 = ort_encode(ort.OrtBert(files["fp32"], 1), QUICK)
    assert torch.allclose(h32, h_hf, atol=1e-4) and torch.allclose(p32, p_hf, atol=1e-4)
    h8, _ = ort_encode(ort.OrtBert(files["int8"], 1), QUICK)
    assert 0 < rel_error(h8, h_hf) < 0.05


def test_bert_analytic_flops_match_torch_flop_counter() -> None:
    """The projection FLOPs are what FlopCounterMode counts (it does not see SDPA, so the
    attention products are checked by their formula)."""
    from bench.bert import QUICK, bert_flops, build_pair, inputs
    from torch.utils.flop_counter import FlopCounterMode

    model, _, _ = build_pair(QUICK)
    s = QUICK
    ids, lengths, _ = inputs(s)
    model.requires_grad_(False)  # the counter's module tracker trips over the position slice
    with FlopCounterMode(display=False) as counter:
        model(ids, lengths)
    attention = 2 * s.batch * s.layers * 2 * s.length**2 * s.d
    assert counter.get_total_flops() + attention == bert_flops(s)


# --------------------------------------------------------------------------- GPT


def test_gpt_quick_run_json_and_report(tmp_path: Path) -> None:
    res, md = quick_run(tmp_path, "gpt-generate-b8")
    check_common(res, "gpt-generate-b8", "tok/s")
    modes = ["", "-b1", "-b8-nocache", "-b1-nocache"]
    assert set(res["median"]) == {f"{w}-fp32{m}" for w in ("dhian", "hf") for m in modes}
    assert list(res["ratio"]) == [f"dhian-fp32{m}/hf-fp32{m}" for m in modes]
    assert res["unavailable"] == {} and res["best"] == {}
    assert md.count("identical for") == 4


def test_gpt_weights_copied_into_hf_give_the_same_logits_and_tokens() -> None:
    from bench.gpt import MODES, QUICK, build_pair, dhian_generate, hf_generate, prompts

    model, hf = build_pair(QUICK, seed=5)
    ids = prompts(QUICK, 8)
    with torch.no_grad():
        ours, theirs = model(ids).logits, hf(input_ids=ids).logits  # (B, T, V)
    assert torch.allclose(ours, theirs, atol=1e-5) and ours.std() > 0.01
    for _, batch, cache in MODES:
        a, b = dhian_generate(model, QUICK, batch, cache), hf_generate(hf, QUICK, batch, cache)
        assert a == b and all(len(t) == QUICK.new for t in a)
    assert len({tuple(t) for t in dhian_generate(model, QUICK, 8, True)}) > 1


def test_gpt_analytic_flops_against_flop_counter() -> None:
    """HF's projections and logits (Conv1D addmm + lm_head; SDPA is not counted) equal the
    analytic count minus its attention products, with and without the cache."""
    from bench.gpt import QUICK, build_pair, gpt_flops, hf_generate
    from torch.utils.flop_counter import FlopCounterMode

    _, hf = build_pair(QUICK)
    s = QUICK
    for batch, cache in ((1, True), (8, True), (8, False)):
        with FlopCounterMode(display=False) as counter:
            hf_generate(hf, s, batch, cache)
        if cache:
            keys = sum(i + 1 for i in range(s.prompt)) + sum(s.prompt + t for t in range(1, s.new))
        else:
            keys = sum(sum(i + 1 for i in range(s.prompt + t)) for t in range(s.new))
        attention = 2.0 * batch * keys * 2 * s.d * s.layers
        assert counter.get_total_flops() == gpt_flops(s, batch, cache) - attention


# --------------------------------------------------------------------------- peers


def test_ct2_float32_conversion_decodes_like_dhian() -> None:
    """The converted model (ct2-transformers-converter's code on the exported Marian dir) is the
    same function: greedy and beam-4 tokens equal dhian's decoding the same free steps."""
    pytest.importorskip("ctranslate2")
    from bench.decode import QUICK, build_pair, ct2_decode, dhian_decode_free

    from bench import ct2

    seen: set[tuple[int, ...]] = set()
    for seed in (0, 1, 2):
        model, _, folder = build_pair(QUICK, seed=seed)
        decoders, names = ct2.setup(folder, model, QUICK.vocab)
        assert names[model.bos_id] == "<s>" and names[-1] == "<pad>"
        for beam in (1, 4):
            ours = dhian_decode_free(model, QUICK, beam)
            assert ct2_decode(decoders["fp32"], QUICK, beam) == ours
            seen.update(tuple(t) for t in ours)
            got8 = ct2_decode(decoders["int8"], QUICK, beam)
            assert len(got8) == QUICK.batch and all(len(t) == QUICK.out_len - 1 for t in got8)
        for decoder in decoders.values():
            decoder.close()
    assert len(seen) > 4  # the outputs vary: not a degenerate constant output


def test_an_unavailable_peer_is_recorded_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import ort

    monkeypatch.setattr(ort, "unavailable", lambda: "onnxruntime is not installed (test)")
    res, md = quick_run(tmp_path, "bert-base-32x128")
    assert res["unavailable"] == {
        "ort-fp32": "onnxruntime is not installed (test)",
        "ort-int8": "onnxruntime is not installed (test)",
    }
    assert not any(name.startswith("ort-") for name in res["median"])
    assert res["ratio"]["dhian-int8/ort-int8"] is None and res["ratio"]["dhian-fp32/hf-fp32"]
    assert "| dhian-int8/ort-int8 | n/a (ort-int8: onnxruntime is not installed (test)) |" in md


def test_best_of_alias_and_missing_sides_in_ratios() -> None:
    from bench.harness import Setup, ratios

    setup = Setup(
        [],
        [("best", "peer"), ("a", "peer"), ("a", "gone"), ("gone", "peer")],
        "",
        best={"best": ["a", "b", "c"]},
        unavailable={"gone": "why"},
    )
    picks, values = ratios({"a": 2.0, "b": 6.0, "peer": 4.0}, setup)
    assert picks == {"best": "b"}  # c was not timed, b is the fastest
    assert values == {"best/peer": 1.5, "a/peer": 0.5, "a/gone": None, "gone/peer": None}


# --------------------------------------------------------------------------- training step


def test_train_step_quick_schema_mfu_and_same_weights(tmp_path: Path) -> None:
    from bench.harness import bf16_native

    res, md = quick_run(tmp_path, "train-6x6-d512")
    check_common(res, "train-6x6-d512", "tok/s")
    bf16 = {"dhian-bf16"} if bf16_native() else set()
    assert set(res["median"]) == {"dhian-fp32", "hf-fp32"} | bf16
    assert set(res["ratio"]) == {"dhian-fp32/hf-fp32", "dhian-bf16/dhian-fp32", "mfu-fp32"}
    assert (res["ratio"]["dhian-bf16/dhian-fp32"] is not None) == bool(bf16)
    assert 0 < res["ratio"]["mfu-fp32"] < 5
    assert "WARNING" not in md  # dhian and HF start from the very same loss
    assert "mfu-fp32" in md


def test_train_step_on_a_cpu_without_bf16_says_so_instead_of_a_ratio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.train

    monkeypatch.setattr(bench.train, "bf16_native", lambda: False)
    res, md = quick_run(tmp_path, "train-6x6-d512")
    assert set(res["median"]) == {"dhian-fp32", "hf-fp32"}  # emulated bf16 is not timed
    assert res["ratio"]["dhian-bf16/dhian-fp32"] is None
    assert res["unavailable"]["dhian-bf16"].startswith("bf16 not native here")
    assert "| dhian-bf16/dhian-fp32 | n/a (dhian-bf16: bf16 not native here" in md


def test_train_step_matches_hf_update(tmp_path: Path) -> None:
    """The timed dhian and HF updates are the same computation: equal losses over 3 updates."""
    from bench.decode import build_pair
    from bench.train import QUICK, batch, dhian_logits, hf_logits, make_step

    s = QUICK.model
    model, hf, _ = build_pair(s)
    data = batch(s)
    ours = make_step(model, dhian_logits, data, QUICK.smoothing)
    theirs = make_step(hf, hf_logits, data, QUICK.smoothing)
    for _ in range(3):
        assert ours() == pytest.approx(theirs(), rel=1e-4)


def test_train_flops_counts_linear_layers() -> None:
    from bench.decode import Shape
    from bench.train import train_flops

    s = Shape(layers=1, d=2, heads=1, ff=3, vocab=5, batch=1, src_len=1, out_len=1)
    # per layer: enc 4e^2 + 2ef = 28, cross k/v 2e^2 = 8, dec 6e^2 + 2ef = 36, output e*v = 10,
    # attention 2 e (enc) + 2 e + 2 e (dec self + cross) = 12
    assert train_flops(s) == 3 * 2.0 * (28 + 8 + 36 + 10 + 12)
