"""Side-by-side benchmarks of dhian against its peers: ``python -m bench SCENARIO``.

:mod:`bench.harness` owns the generic part (thread pinning, a matmul peak measured in the same
run, warm-up then alternating timed runs, median and min-max, GFLOP/s and fraction of peak,
peak RSS, ``bench/results/<scenario>.json`` + ``.md``); scenario modules (:mod:`bench.decode`)
register what to run. Not part of the installed package: run it from a checkout.
"""
