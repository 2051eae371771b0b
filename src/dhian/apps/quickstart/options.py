"""What ``dhian quickstart`` is asked for: :class:`QuickstartOptions` and the recipe facts it
checks against (the packaged model recipes, the ``--fast`` shrink).

Imports: stdlib, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dhian.errors import ConfigError

__all__ = ["FAST_DATA", "FAST_TEST_EXAMPLES", "FAST_TRAIN", "MODELS", "QuickstartOptions"]

MODELS = {"transformer": "quickstart-transformer.yaml", "rnn": "quickstart-rnn.yaml"}
#: ``--fast``: a tiny model over a capped corpus (a smoke test that runs in well under a minute)
FAST: dict[str, dict[str, Any]] = {
    "transformer": {
        "embed_dim": 32,
        "num_heads": 2,
        "ff_dim": 64,
        "enc_layers": 1,
        "dec_layers": 1,
        "max_positions": 128,
    },
    "rnn": {"embed_dim": 32, "hidden_dim": 32, "attention_dim": 32},
}
FAST_DATA = {"vocab_size": 400, "max_len": 32, "max_train_examples": 300, "max_eval_examples": 6}
FAST_TRAIN = {
    "max_steps": 400,
    "max_tokens": 1024,
    "lr": 3e-3,
    "warmup_steps": 20,
    "eval_every": 0,
    "save_every": 0,
    "log_every": 5,
}
FAST_TEST_EXAMPLES = 12


@dataclasses.dataclass(frozen=True)
class QuickstartOptions:
    """What ``dhian quickstart`` was asked for.

    ``minutes``: training time budget (``train.max_minutes``); ``model``: transformer | rnn;
    ``out``: run dir; ``corpus``: a parallel corpus spec; ``fast``: tiny smoke-test setup;
    ``retrain``: ignore a finished run in ``out``; ``beam``: test decoding, 1 = greedy, k > 1 =
    beam k (default 5); ``max_test``: 0 = the whole test split, N = its first N examples; ``samples`` /
    ``heatmaps``: test verses printed / drawn; ``overrides``: extra ``--set key=value``;
    ``curve``: earlier time budgets (minutes) whose models the same run also keeps and scores —
    each is the model a run with ``--minutes M`` would have ended with (see
    :meth:`dhian.train.trainer.Trainer.stop_point`).
    """

    minutes: float = 15.0
    model: str = "transformer"
    out: str = "runs/quickstart"
    corpus: str = "bible:de-en"
    fast: bool = False
    retrain: bool = False
    beam: int = 5
    max_test: int = 0
    samples: int = 5
    heatmaps: int = 3
    overrides: tuple[str, ...] = ()
    curve: tuple[float, ...] = ()

    def check(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work."""
        if self.model not in MODELS:
            raise ConfigError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if not self.minutes > 0:
            raise ConfigError(f"--minutes must be > 0, got {self.minutes}")
        if self.beam < 1:
            raise ConfigError(f"--beam must be >= 1 (1 = greedy), got {self.beam}")
        for m in self.curve:
            if not 0 < m < self.minutes:
                raise ConfigError(
                    f"--curve minutes must lie between 0 and --minutes {self.minutes:g}, got {m:g}"
                )
        if len(set(self.curve)) != len(self.curve):
            raise ConfigError(
                f"--curve lists a time twice: {','.join(f'{m:g}' for m in self.curve)}"
            )
        if self.max_test < 0:
            raise ConfigError(
                f"--max-test must be >= 0 (0 = the whole test split), got {self.max_test}"
            )

    @property
    def test_limit(self) -> int:
        """Test examples to decode (0 = all)."""
        return self.max_test or (FAST_TEST_EXAMPLES if self.fast else 0)

    def identity(self) -> dict[str, Any]:
        """What must match for a finished run to be reused."""
        return {"model": self.model, "corpus": self.corpus, "fast": self.fast}
