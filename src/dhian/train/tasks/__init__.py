"""Training tasks, one module each, and the explicit list the trainer picks from.

Each task (:class:`~dhian.train.tasks.base.Task`) supplies data, loss and evaluation for one
kind of training: :mod:`~dhian.train.tasks.translation`, :mod:`~dhian.train.tasks.classification`,
:mod:`~dhian.train.tasks.lm` (+ :mod:`~dhian.train.tasks.lm_eval`),
:mod:`~dhian.train.tasks.mlm` (+ :mod:`~dhian.train.tasks.mlm_eval`),
:mod:`~dhian.train.tasks.token_classification` (NER) and
:mod:`~dhian.train.tasks.question_answering` (extractive QA). :func:`task_for` picks
``train.task`` by name, or for ``auto`` the first task in :data:`TASKS` whose
:meth:`~dhian.train.tasks.base.Task.fits` accepts the model config (``model.type``; for bert also
``model.task``). A new task is a module here and one line in :data:`TASKS`.
"""

from __future__ import annotations

from dhian.config import RunConfig
from dhian.errors import ConfigError, nearest
from dhian.train.tasks.base import EvalResult, IteratorStream, Log, LossTerms, Task, token_loss
from dhian.train.tasks.classification import ClassificationTask
from dhian.train.tasks.lm import LMTask
from dhian.train.tasks.mlm import MaskedLMTask
from dhian.train.tasks.question_answering import QuestionAnsweringTask
from dhian.train.tasks.token_classification import TokenClassificationTask
from dhian.train.tasks.translation import TranslationTask

__all__ = [
    "TASKS",
    "EvalResult",
    "IteratorStream",
    "LossTerms",
    "Task",
    "task_for",
    "token_loss",
]

#: ``train.task`` name → task class; ``auto`` tries them in this order
TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        ClassificationTask,
        LMTask,
        MaskedLMTask,
        QuestionAnsweringTask,
        TokenClassificationTask,
        TranslationTask,
    )
}


def task_for(config: RunConfig, log: Log = print) -> Task:
    """The task ``config.train.task`` names, or for ``auto`` the registered task that fits
    ``config.model``."""
    model = config.model
    mtype = str(getattr(model, "type", ""))
    wanted = str(getattr(config.train, "task", "auto") or "auto")
    what = f"model.type {mtype!r}" + (
        f" with model.task {model.task!r}" if isinstance(getattr(model, "task", None), str) else ""
    )
    if wanted == "auto":
        for cls in TASKS.values():
            if cls.fits(model):
                return cls(config, log)
        types = sorted({t for c in TASKS.values() for t in c.model_types})
        raise ConfigError(
            f"no training task for {what}{nearest(mtype, types)}; trainable types: "
            f"{', '.join(types)}"
        )
    if wanted not in TASKS:
        raise ConfigError(
            f"unknown train.task {wanted!r}{nearest(wanted, TASKS)}; valid: auto, "
            f"{', '.join(sorted(TASKS))}"
        )
    cls = TASKS[wanted]
    if not cls.fits(model):
        raise ConfigError(
            f"train.task {wanted!r} cannot train {what}; it trains model.type "
            f"{', '.join(cls.model_types)} (or set train.task=auto)"
        )
    return cls(config, log)
