"""dhian.nn.selfcheck.run_checks: passes on the real core and notices a broken one."""

from __future__ import annotations

import pytest
import torch

from dhian.nn import selfcheck


def test_all_checks_pass() -> None:
    results = selfcheck.run_checks()
    assert len(results) == len(selfcheck.CHECKS) >= 7
    for name, passed, detail in results:
        assert isinstance(name, str) and isinstance(detail, str)
        assert passed, f"{name}: {detail}"


def test_broken_attention_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    real = selfcheck.scaled_dot_product

    def wrong_scale(q, k, v, mask=None, dropout=0.0, need_weights=False, **kw):  # type: ignore[no-untyped-def]
        if need_weights:
            return real(q * 1.01, k, v, mask, dropout, need_weights, **kw)
        return real(q, k, v, mask, dropout, need_weights, **kw)

    monkeypatch.setattr(selfcheck, "scaled_dot_product", wrong_scale)
    results = dict((n, p) for n, p, _ in selfcheck.run_checks())
    assert results["SDPA fast path == eager path"] is False


def test_crash_counts_as_failure_and_rng_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> tuple[bool, str]:
        raise RuntimeError("kaput")

    monkeypatch.setattr(selfcheck, "CHECKS", [("boom", boom)])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert selfcheck.run_checks() == [("boom", False, "RuntimeError: kaput")]
    assert torch.equal(torch.get_rng_state(), before)
