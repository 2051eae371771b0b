"""Training: one trainer, the tasks it trains, LR schedules, atomic checkpoints.

- :mod:`~dhian.train.trainer` — :class:`Trainer` / :func:`train` / :class:`TrainResult` /
  :class:`TrainingDiverged`: the loop, one step, evaluation, checkpoints;
- :mod:`~dhian.train.tasks` — the :class:`Task` interface and one module per task (translation,
  classification, lm, mlm), listed explicitly; :func:`task_for` picks one;
- :mod:`~dhian.train.evaluation` — BLEU / chrF / BLEU-by-length of a translation model;
- :mod:`~dhian.train.optim` (AdamW, freeze, autocast), :mod:`~dhian.train.schedules`,
  :mod:`~dhian.train.checkpoint` (last/best, RNG, trainer state), :mod:`~dhian.train.stopping`
  (knob checks, improvement, signals), :mod:`~dhian.train.warmstart` (``init_from``),
  :mod:`~dhian.train.distributed` (torchrun), :mod:`~dhian.train.metricslog` (metrics.jsonl),
  :mod:`~dhian.train.progress` (tqdm bar).

This package file imports nothing, so ``import dhian.train.schedules`` stays light.
"""
