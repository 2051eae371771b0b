"""The benchmark harness (``python -m bench``): the JSON/Markdown it writes, alternating timed
runs, the analytic FLOPs, and dhian = HF MarianMT greedy tokens on the same weights.
Only ``--quick`` (tiny) shapes; no timing is asserted."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``bench`` is a top-level folder of the checkout, not part of the installed package."""
    monkeypatch.syspath_prepend(str(ROOT))
    yield


CONTENDERS = {"dhian-fp32", "hf-fp32", "dhian-bf16", "hf-bf16", "dhian-int8"}
CONTENDERS |= {"dhian-int8-dynamic", "dhian-bf16-plain"}
RATIOS = {"dhian-fp32/hf-fp32", "dhian-bf16/hf-bf16", "dhian-int8/ct2-int8", "dhian-best/ct2-int8"}
RATIOS |= {"dhian-int8/dhian-int8-dynamic", "dhian-bf16/dhian-bf16-plain"}
KEYS = ["scenario", "unit", "median", "minmax", "ratio", "runs", "threads", "peak_gflops"]
KEYS += ["command", "date", "cpu", "best", "unavailable"]


@pytest.mark.parametrize("scenario", ["decode-greedy-16x30", "decode-beam4-16x30"])
def test_quick_run_writes_the_documented_json(tmp_path: Path, scenario: str) -> None:
    import bench.decode  # noqa: F401  (registers the scenarios)
    from bench.harness import main

    assert (
        main(
            [
                scenario,
                "--quick",
                "--runs",
                "2",
                "--warmup",
                "1",
                "--threads",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / f"{scenario}.json").read_text())
    assert list(res) == KEYS
    assert res["scenario"] == scenario and res["unit"] == "tok/s"
    # CTranslate2 is an optional peer: timed when installed, else listed with the reason
    ct2_ok = "ct2-int8" not in res["unavailable"]
    assert (
        set(res["median"]) == set(res["minmax"]) == CONTENDERS | ({"ct2-int8"} if ct2_ok else set())
    )
    for name, (lo, hi) in res["minmax"].items():
        assert 0 < lo <= res["median"][name] <= hi
    assert set(res["ratio"]) == RATIOS
    medians = {**res["median"], "dhian-best": res["median"][res["best"]["dhian-best"]]}
    assert res["best"]["dhian-best"] in {"dhian-fp32", "dhian-bf16", "dhian-int8"}
    assert medians["dhian-best"] == max(
        res["median"][f"dhian-{p}"] for p in ("fp32", "bf16", "int8")
    )
    for key, value in res["ratio"].items():
        a, b = key.split("/")
        if b == "ct2-int8" and not ct2_ok:
            assert value is None
            continue
        assert value == pytest.approx(medians[a] / medians[b], rel=1e-3)
    assert res["runs"] == 2 and res["threads"] == 1
    assert set(res["peak_gflops"]) == {"fp32", "bf16"} and min(res["peak_gflops"].values()) > 0
    assert res["command"].startswith(f"python -m bench {scenario} --quick")
    assert res["date"] == datetime.date.today().isoformat()
    md = (tmp_path / f"{scenario}.md").read_text()
    assert f"# {scenario}" in md and "| dhian-fp32 |" in md and "| hf-bf16 |" in md
    assert "of fp32" in md and "Peak RSS" in md and "outputs identical" in md


def test_greedy_tokens_equal_hf_marian() -> None:
    from bench.decode import QUICK, build_pair, dhian_decode, hf_decode

    torch.set_num_threads(1)
    model, hf, _ = build_pair(QUICK, seed=3)
    ours = dhian_decode(model, QUICK, beam=1)
    theirs = hf_decode(hf, QUICK, beam=1)
    assert len(ours) == QUICK.batch and all(len(t) == QUICK.out_len - 1 for t in ours)
    assert ours == theirs
    assert len({tuple(t) for t in ours}) > 1  # not a degenerate constant output
    eos = model.eos_id
    assert all(eos not in t for t in ours)  # EOS really was held back


def test_beam_tokens_equal_hf_when_forced_eos_is_scored_alike() -> None:
    """dhian's beam search = HF's on the same weights, once the forced final EOS scores 0 as in
    HF (dhian's own limit keeps log p(EOS), which can change the final pick among the beams)."""
    from bench.decode import QUICK, build_pair, dhian_decode, hf_decode

    torch.set_num_threads(1)
    differ = 0
    for seed in (0, 1):
        model, hf, _ = build_pair(QUICK, seed=seed)
        theirs = hf_decode(hf, QUICK, beam=4)
        assert dhian_decode(model, QUICK, beam=4, zero_eos=True) == theirs
        differ += dhian_decode(model, QUICK, beam=4) != theirs
    assert differ >= 1  # the scoring difference is real (so the check above is not vacuous)


def test_timed_runs_alternate_and_must_do_equal_work() -> None:
    from bench.harness import Contender, time_contenders

    calls: list[str] = []

    def make(name: str) -> Contender:
        return Contender(name, lambda: calls.append(name) or 7, 1.0)

    seconds, units = time_contenders([make("a"), make("b"), make("c")], runs=3, warmup=1)
    assert calls == ["a", "b", "c", "a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert units == {"a": 7, "b": 7, "c": 7} and all(len(s) == 3 for s in seconds.values())
    sizes = iter([5, 5, 6])
    with pytest.raises(RuntimeError, match="identical"):
        time_contenders([Contender("x", lambda: next(sizes), 1.0)], runs=2, warmup=1)


def test_analytic_flops_match_torch_flop_counter() -> None:
    """The linear-layer FLOPs of decode_flops are exactly what torch's FlopCounterMode counts
    (it does not see SDPA, so the attention products are checked by their formula only)."""
    from bench.decode import QUICK, build_pair, decode_flops, decode_flops_parts, dhian_decode
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    model, _, _ = build_pair(QUICK)
    s = QUICK
    for beam in (1, 4):
        with FlopCounterMode(display=False) as counter:
            dhian_decode(model, s, beam)
        linear, attn = decode_flops_parts(s, s.batch * beam)
        assert counter.get_total_flops() == linear
        steps = sum((t + 1) + s.src_len for t in range(s.out_len))
        per_layer = 2 * 2 * s.d * (s.batch * s.src_len**2 + s.batch * beam * steps)
        assert attn == s.layers * per_layer
        assert decode_flops(s, s.batch * beam) == linear + attn


def test_unknown_scenario_is_refused() -> None:
    import bench.decode  # noqa: F401
    from bench.harness import run_scenario

    with pytest.raises(SystemExit, match="unknown scenario"):
        run_scenario("decode-nope", quick=True)
    assert "bench" in sys.modules
