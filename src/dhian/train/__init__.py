"""Training: the model-agnostic engine, tasks, LR schedules, atomic checkpoints, curves.

Public API (imported lazily so ``import dhian.train`` stays light):
:func:`train` / :class:`Trainer` / :class:`TrainResult` / :class:`TrainingDiverged`
(:mod:`~dhian.train.engine`), :class:`Task` / :func:`register_task` / :func:`task_for`
(:mod:`~dhian.train.tasks`), :func:`lr_factor` / :func:`build_scheduler`
(:mod:`~dhian.train.schedules`). Modules: ``engine`` (loop), ``tasks`` (task interface),
``translation`` (the translation task), ``optim`` (AdamW, freeze, device, autocast),
``lm`` (the causal-LM task), ``lm_eval`` (:func:`evaluate_lm`, perplexity), ``mlm_eval``
(:func:`evaluate_mlm`, masked-token accuracy), ``schedules``,
``checkpoint`` (last/best, RNG, trainer state), ``stopping`` (knob checks,
improvement, signals), ``warmstart`` (``init_from``), ``metricslog`` (metrics.jsonl writer),
``curves`` (PNG), ``progress`` (tqdm bar).
May import every layer to its left: text, data, nn, models, decoding, metrics, viz.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train": "engine",
    "Trainer": "engine",
    "TrainResult": "engine",
    "TrainingDiverged": "engine",
    "Task": "tasks",
    "register_task": "tasks",
    "task_for": "tasks",
    "lr_factor": "schedules",
    "build_scheduler": "schedules",
    "evaluate_lm": "lm_eval",
    "evaluate_mlm": "mlm_eval",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dhian.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dhian.train.{module}"), name)
