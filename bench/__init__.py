"""Side-by-side benchmarks of dhian against its peers: ``python -m bench SCENARIO``.

:mod:`bench.harness` owns the generic part (thread pinning, a matmul peak measured in the same
run, warm-up then alternating timed runs, median and min-max, GFLOP/s and fraction of peak,
peak RSS, ``bench/results/<scenario>.json`` + ``.md``); scenario modules register what to run:
:mod:`bench.decode` (Marian greedy / beam-4 decoding), :mod:`bench.bert` (BERT-base encoder),
:mod:`bench.gpt` (GPT-2-shaped generation); :mod:`bench.ct2` and :mod:`bench.ort` wrap the
optional CTranslate2 and ONNX Runtime peers. :mod:`bench.soak` (``python -m bench.soak``) is the
soak test of ``dhian serve``: minutes of mixed load, errors, latency and memory growth. Not part of the installed package: run it from a
checkout.
"""
