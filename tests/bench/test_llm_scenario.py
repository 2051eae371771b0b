"""``llm-generate-smollm2 --quick``: the contenders (the compiled int4 step at batch 1 among
them, its compile times in the notes), the exact ratio keys of issue #17, the best-of picks
and the "unavailable" record of a missing llama.cpp (slow: loads SmolLM2 six times and
compiles one decoding step)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gguf")

RATIOS = [
    "dhian-best-b1/llamacpp-b1",
    "dhian-best-b8/llamacpp-b1",
    "dhian-best-prefill512/llamacpp-prefill512",
    "dhian-bf16-b1/hf-bf16-b1",
    "dhian-fp32-b1/hf-fp32-b1",
]


@pytest.mark.slow
def test_llm_quick_run_schema(tmp_path: Path) -> None:
    import bench.llm  # noqa: F401
    from bench.harness import main

    args = ["llm-generate-smollm2", "--quick", "--runs", "1", "--warmup", "0", "--threads", "2"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "llm-generate-smollm2.json").read_text())
    assert res["unit"] == "tok/s" and list(res["ratio"]) == RATIOS
    dhian = {
        f"dhian-{m}-{k}"
        for m in ("fp32", "bf16", "int8", "int4", "int4-fp32")
        for k in ("b1", "b8", "prefill512")
    }
    assert dhian | {"dhian-int4c-b1"} <= set(res["median"])
    md = (tmp_path / "llm-generate-smollm2.md").read_text()
    assert "dhian-int4c-b1 compile (not timed)" in md
    assert "dhian int4 compiled vs eager, b1 greedy" in md
    assert set(res["best"]) == {"dhian-best-b1", "dhian-best-b8", "dhian-best-prefill512"}
    if "llamacpp-b1" in res["unavailable"]:
        assert res["ratio"]["dhian-best-b1/llamacpp-b1"] is None
    else:
        assert {"llamacpp-b1", "llamacpp-prefill512"} <= set(res["median"])
