"""dhian.nn.batch_parallel: when a batch is split, that each part runs on one worker thread
with one intra-op thread under the caller's modes, and that the results come back in order."""

from __future__ import annotations

import threading

import torch

from dhian.nn.batch_parallel import MIN_TOKENS_PER_PART, batch_parts, run_parts
from helpers.threads import torch_threads

CPU = torch.device("cpu")


def test_batch_parts_only_for_cpu_inference_with_threads_to_use() -> None:
    with torch_threads(2), torch.no_grad():
        assert batch_parts(32, 128, CPU) == 2
        assert batch_parts(1, 128, CPU) == 1  # one sentence cannot be split
        assert batch_parts(4, MIN_TOKENS_PER_PART // 4, CPU) == 1  # too small to pay
        assert batch_parts(32, 128, CPU, enabled=False) == 1
        assert batch_parts(32, 128, torch.device("meta")) == 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert batch_parts(32, 128, CPU) == 1
    with torch_threads(2):
        assert batch_parts(32, 128, CPU) == 1  # gradients on
    with torch_threads(1), torch.no_grad():
        assert batch_parts(32, 128, CPU) == 1


def test_run_parts_in_order_on_single_threaded_workers_under_the_callers_modes() -> None:
    caller = threading.get_ident()

    def part(rows: slice) -> tuple[slice, int, int, bool, bool]:
        made = torch.zeros(1)
        return (
            rows,
            threading.get_ident(),
            torch.get_num_threads(),
            made.is_inference(),
            torch.is_grad_enabled(),
        )

    with torch_threads(2):
        with torch.inference_mode():
            got = run_parts(part, 7, 3)
        assert torch.get_num_threads() == 2  # the caller's count survives the workers' start
        with torch.no_grad():
            plain = run_parts(part, 7, 3)
    assert [g[0] for g in got] == [slice(0, 3), slice(3, 5), slice(5, 7)]
    assert all(g[1] != caller and g[2] == 1 for g in got)
    assert all(g[3] and not g[4] for g in got)  # inference mode followed the caller
    assert all(not g[3] and not g[4] for g in plain)  # no_grad without inference mode too
    assert run_parts(part, 5, 1)[0][:2] == (slice(0, 5), caller)  # one part: here
