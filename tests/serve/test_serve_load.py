"""A bounded load test on loopback (slow): 200 concurrent clients hammer ``/translate`` of a
``dhian serve`` process for a fixed time. Every request must be answered 200 or 503 (with
Retry-After), the server must stay up, and the latency percentiles are printed."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("uvicorn", reason="pip install fastapi uvicorn httpx")
import httpx
from server_proc import free_port, server_process

CLIENTS = 200
SECONDS = 6.0
TEXTS = [
    "Und es ward Licht.",
    "Im Anfang schuf Gott Himmel und Erde.",
    "Gott",
    "Und nannte das Licht Tag.",
]


async def _hammer(url: str) -> list[tuple[int, float, str | None]]:
    """(status, latency s, Retry-After) of every request sent during ``SECONDS``."""
    results: list[tuple[int, float, str | None]] = []
    stop = time.monotonic() + SECONDS
    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=CLIENTS + 10)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:

        async def worker(i: int) -> None:
            n = 0
            while time.monotonic() < stop:
                body = {"text": TEXTS[(i + n) % len(TEXTS)]}
                start = time.perf_counter()
                r = await client.post("/translate", json=body)
                results.append(
                    (r.status_code, time.perf_counter() - start, r.headers.get("retry-after"))
                )
                n += 1
                if r.status_code == 503:
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
    return results


@pytest.mark.slow
def test_200_concurrent_clients_get_200_or_503(tiny_dirs, tmp_path):
    port = free_port()
    argv = ["-m", "dhian", "serve", "--model", str(tiny_dirs["rnnsearch"]), "--port", str(port)]
    argv += ["--device", "cpu", "--max-queue", "32", "--max-batch", "16", "--timeout", "60"]
    argv += ["--max-connections-per-client", "256"]  # 200 clients share one loopback address
    with server_process(argv, port, tmp_path / "log") as (url, proc):
        results = asyncio.run(_hammer(url))
        statuses = {s for s, _, _ in results}
        assert statuses <= {200, 503}, statuses
        ok = sorted(t for s, t, _ in results if s == 200)
        busy = [r for r in results if r[0] == 503]
        assert ok, "no request succeeded"
        assert all(retry == "1" for _, _, retry in busy)
        p50, p99 = ok[len(ok) // 2], ok[min(len(ok) - 1, int(len(ok) * 0.99))]
        health = httpx.get(f"{url}/health").json()
        print(
            f"\n{len(results)} requests in {SECONDS:.0f} s from {CLIENTS} clients: "
            f"{len(ok)} × 200, {len(busy)} × 503; 200 latency p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms; {health['batches']} model batches "
            f"({health['requests']} requests, {len(ok) / SECONDS:.0f} answers/s)"
        )
        assert proc.poll() is None and health["status"] == "ok"
        assert health["batches"] < health["requests"]  # load was batched
