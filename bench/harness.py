"""The benchmark harness: time contenders fairly in one process and write the results.

A scenario (registered with :func:`register`) builds a :class:`Setup`: named
:class:`Contender` callables that each do the same work once and return how many units they
produced (e.g. output tokens), the analytic FLOPs of one run, the ratios to report, and
correctness notes. :func:`run_scenario` then

1. pins ``torch.set_num_threads(threads)`` (reported as set),
2. measures a matmul peak (fp32 and bf16 ``torch.matmul`` of n x n, best of a few) in the
   same process, so "fraction of peak" is relative to what this machine does right now,
3. runs every contender ``warmup`` times, then ``runs`` timed rounds, alternating the order
   (A B C D, then D C B A, ...) so drift (thermal, other load) hits everyone alike,
4. reports per contender the median and min-max throughput (units / second), the achieved
   GFLOP/s at the median and its fraction of the matching-dtype peak, and the process's peak
   RSS (``resource.getrusage``; one process hosts every contender, so it is their maximum),
5. writes ``<out>/<scenario>.json`` (the fixed schema below) and ``<out>/<scenario>.md``.

JSON schema: ``{"scenario", "unit", "median": {name: x}, "minmax": {name: [lo, hi]},
"ratio": {"a/b": median_a / median_b, key: fraction of peak}, "runs", "threads", "peak_gflops": {"fp32", "bf16"},
"command", "date", "cpu": "<model>, <flags>", "best": {alias: member}, "unavailable": {name: reason}}``.

A ratio side may be a *best-of alias* (``Setup.best``, e.g. ``dhian-best`` = the fastest median
among dhian-fp32/bf16/int8; ``"best"`` says which one it was), and a peer that cannot run here
(not installed, export failed) is listed in ``Setup.unavailable`` with the reason: it is not
timed, ``"unavailable"`` records why, and every ratio involving it is ``null``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from dhian.train.optim import BF16_FLAGS, cpu_flags

RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass
class Contender:
    """One implementation under test. ``run()`` does the work once and returns the units it
    produced; ``flops`` is the analytic FLOP count of one run; ``dtype`` picks the peak
    (``fp32`` | ``bf16``) that its GFLOP/s is compared with."""

    name: str
    run: Callable[[], int]
    flops: float
    dtype: str = "fp32"


@dataclasses.dataclass
class Setup:
    """What a scenario hands the harness: ``contenders`` (timed in this order, alternating),
    ``ratios`` as (numerator, denominator) names, the shape ``description`` and ``notes``
    (correctness checks, caveats) for the Markdown report; ``best`` maps an alias usable in
    ratios to the contenders it picks the fastest of; ``unavailable`` maps peers that could not
    be set up to the reason (their ratios are ``null``)."""

    contenders: list[Contender]
    ratios: list[tuple[str, str]]
    description: str
    notes: list[str] = dataclasses.field(default_factory=list)
    best: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)
    fractions: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A named benchmark: ``unit`` of throughput and ``build(quick) -> Setup``."""

    name: str
    unit: str
    build: Callable[[bool], Setup]


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    """Make ``scenario`` runnable as ``python -m bench NAME``."""
    SCENARIOS[scenario.name] = scenario
    return scenario


# --------------------------------------------------------------------------- measuring


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 5) -> float:
    """Best GFLOP/s of ``torch.matmul`` on two n x n ``dtype`` matrices (2 n^3 FLOPs each)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    torch.matmul(a, b)  # warm-up (allocations, kernel choice)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20


def time_contenders(
    contenders: Sequence[Contender], runs: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Seconds of each timed run per contender, and the units each produced (every run must
    produce the same number). Warm-up runs first; timed rounds alternate the order."""
    units: dict[str, int] = {}
    for _ in range(warmup):
        for c in contenders:
            units[c.name] = c.run()
    seconds: dict[str, list[float]] = {c.name: [] for c in contenders}
    for r in range(runs):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for c in order:
            t = time.perf_counter()
            produced = c.run()
            seconds[c.name].append(time.perf_counter() - t)
            if units.setdefault(c.name, produced) != produced:
                raise RuntimeError(
                    f"{c.name} produced {produced} units, {units[c.name]} before: the work "
                    "must be identical in every run"
                )
    return seconds, units


# --------------------------------------------------------------------------- the run


def run_scenario(
    name: str,
    *,
    runs: int = 5,
    warmup: int = 1,
    threads: int = 2,
    quick: bool = False,
    out: str | Path | None = None,
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run scenario ``name``; write ``<out>/<name>.json`` and ``.md``; return the JSON dict.

    ``out`` defaults to ``bench/results`` (a temporary dir with ``quick``, so a smoke run never
    overwrites real results).
    """
    if name not in SCENARIOS:
        raise SystemExit(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    if runs < 1 or warmup < 0 or threads < 1:
        raise SystemExit("--runs and --threads must be >= 1 and --warmup >= 0")
    scenario = SCENARIOS[name]
    torch.set_num_threads(threads)
    threads_set = torch.get_num_threads()
    n = 128 if quick else 1024
    peaks = {
        "fp32": round(matmul_peak(torch.float32, n), 2),
        "bf16": round(matmul_peak(torch.bfloat16, n), 2),
    }
    log(
        f"{name}: threads {threads_set}; matmul peak {n}x{n}: fp32 {peaks['fp32']:.1f}, "
        f"bf16 {peaks['bf16']:.1f} GFLOP/s"
    )
    setup = scenario.build(quick)
    log(setup.description)
    for note in setup.notes:
        log(f"  {note}")
    seconds, units = time_contenders(setup.contenders, runs, warmup)
    rows = []
    median: dict[str, float] = {}
    minmax: dict[str, list[float]] = {}
    for c in setup.contenders:
        rates = [units[c.name] / s for s in seconds[c.name]]
        median[c.name] = round(statistics.median(rates), 3)
        minmax[c.name] = [round(min(rates), 3), round(max(rates), 3)]
        gflops = c.flops / statistics.median(seconds[c.name]) / 1e9
        rows.append((c, gflops, gflops / peaks[c.dtype] if peaks.get(c.dtype) else 0.0))
        log(
            f"  {c.name:>12}: {median[c.name]:.1f} {scenario.unit} "
            f"(min {minmax[c.name][0]:.1f}, max {minmax[c.name][1]:.1f}), {gflops:.1f} GFLOP/s"
        )
    best, ratio = ratios(median, setup)
    fraction = {c.name: frac for c, _, frac in rows}
    for key, who in setup.fractions.items():
        ratio[key] = round(fraction[who], 4) if who in fraction else None
    result = {
        "scenario": name,
        "unit": scenario.unit,
        "median": median,
        "minmax": minmax,
        "ratio": ratio,
        "runs": runs,
        "threads": threads_set,
        "peak_gflops": peaks,
        "command": command
        or f"python -m bench {name} --runs {runs} --warmup {warmup} "
        f"--threads {threads}{' --quick' if quick else ''}",
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_description(),
        "best": best,
        "unavailable": dict(setup.unavailable),
    }
    folder = (
        Path(out) if out else (Path(tempfile.mkdtemp(prefix="dhian-bench-")) if quick else RESULTS)
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = markdown(result, setup, rows, warmup, peak_rss_mib())
    (folder / f"{name}.md").write_text(md, encoding="utf-8")
    for key, value in ratio.items():
        log(
            f"  {key}: " + (f"n/a ({why_missing(key, setup)})" if value is None else f"{value:.3f}")
        )
    for peer, why in setup.unavailable.items():
        log(f"  {peer} unavailable: {why}")
    log(f"wrote {folder / (name + '.json')} and {name}.md")
    return result


def ratios(
    median: dict[str, float], setup: Setup
) -> tuple[dict[str, str], dict[str, float | None]]:
    """The best-of picks (alias → fastest member by median) and ``{"a/b": median_a / median_b}``
    for ``setup.ratios`` (``None`` when a side is unavailable or was not timed)."""
    values = dict(median)
    best: dict[str, str] = {}
    for alias, members in setup.best.items():
        timed = [m for m in members if m in median]
        if timed:
            best[alias] = max(timed, key=lambda m: median[m])
            values[alias] = median[best[alias]]
    out: dict[str, float | None] = {}
    for a, b in setup.ratios:
        ok = a in values and b in values and values[b] > 0
        out[f"{a}/{b}"] = round(values[a] / values[b], 4) if ok else None
    return best, out


def why_missing(key: str, setup: Setup) -> str:
    """Why the ratio ``key`` ("a/b") has no value: the reason a side is unavailable
    (``Setup.unavailable``), else "not timed"."""
    for side in key.split("/"):
        if side in setup.unavailable:
            return f"{side}: {setup.unavailable[side]}"
    return "not timed"


def _versions() -> str:
    """Versions of torch, Python and of the peers this run imported."""
    parts = [f"torch {torch.__version__}", f"Python {platform.python_version()}"]
    for peer in ("transformers", "onnxruntime", "ctranslate2"):
        module = sys.modules.get(peer)
        if module is not None:
            parts.append(f"{peer} {getattr(module, '__version__', '?')}")
    parts.append(f"quantized engine {torch.backends.quantized.engine}")
    return ", ".join(parts)


#: The /proc/cpuinfo flags that decide which kernels run fast (reported with every result).
SPEED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "avx512_fp16",
)


def bf16_native() -> bool:
    """Whether the CPU has bf16 instructions (``avx512_bf16`` or ``amx_bf16``)."""
    return bool(cpu_flags() & set(BF16_FLAGS))


def cpu_description() -> str:
    """``"<model name>, <speed flags present>"`` (plus "bf16 not native here" without them)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    present = " ".join(f for f in SPEED_FLAGS if f in flags)
    native = "" if bf16_native() else "; bf16 not native here"
    return f"{name}, {present or 'no AVX flags read'}{native}"


def markdown(
    result: dict[str, Any],
    setup: Setup,
    rows: Sequence[tuple[Contender, float, float]],
    warmup: int,
    rss_mib: float,
) -> str:
    """The Markdown report of one scenario run."""
    unit = result["unit"]
    peaks = result["peak_gflops"]
    lines = [
        f"# {result['scenario']}",
        "",
        setup.description,
        "",
        f"`{result['command']}` — {result['date']}, {cpu_description()}, {result['threads']} threads "
        f"(torch.set_num_threads), {result['runs']} timed runs after {warmup} warm-up, "
        f"alternating order; {_versions()}.",
        "",
        f"| contender | median {unit} | min–max {unit} | GFLOP/s (median) | of matmul peak |",
        "|---|---:|---:|---:|---:|",
    ]
    for c, gflops, frac in rows:
        lo, hi = result["minmax"][c.name]
        lines.append(
            f"| {c.name} | {result['median'][c.name]:.1f} | {lo:.1f}–{hi:.1f} | {gflops:.1f} | "
            f"{100 * frac:.1f}% of {c.dtype} |"
        )
    lines += ["", "| ratio of medians (a name without /: fraction of peak) | value |", "|---|---:|"]
    for key, value in result["ratio"].items():
        shown = f"n/a ({why_missing(key, setup)})" if value is None else format(value, ".3f")
        lines.append(f"| {key} | {shown} |")
    if result["best"]:
        picks = ", ".join(f"{alias} = {m}" for alias, m in result["best"].items())
        lines += ["", f"Best-of: {picks}."]
    if result["unavailable"]:
        lines += ["", "Peers not run here:"]
        lines += [f"- {peer}: {why}" for peer, why in result["unavailable"].items()]
    lines += [
        "",
        f"Matmul peak measured in the same run: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 "
        f"{peaks['bf16']:.1f} GFLOP/s. Peak RSS of the process (all contenders): "
        f"{rss_mib:.0f} MiB.",
    ]
    if setup.notes:
        lines += ["", *[f"- {n}" for n in setup.notes]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench SCENARIO [--runs 5] [--warmup 1] [--threads 2] [--quick] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS), help="what to benchmark")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per contender (5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a correctness smoke run")
    parser.add_argument("--out", help="results folder (default bench/results; --quick: a temp dir)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    raw = list(argv) if argv is not None else sys.argv[1:]
    command = "python -m bench " + " ".join(shlex.quote(a) for a in raw)
    run_scenario(
        args.scenario,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        quick=args.quick,
        out=args.out,
        command=command,
    )
    return 0
