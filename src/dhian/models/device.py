"""The one device choice: a ``device`` setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) → a
:class:`torch.device`, used by the trainer (``train.device``) and by inference (``--device``).

``auto`` picks CUDA when available, else CPU; asking for CUDA where there is none, or for an
unknown device, is a one-line :class:`~dhian.errors.ConfigError` naming the setting.
Imports: torch, :mod:`dhian.errors`.
"""

from __future__ import annotations

import torch

from dhian.errors import ConfigError

__all__ = ["choose_device"]


def choose_device(name: str, setting: str = "--device") -> torch.device:
    """The device ``name`` stands for; ``setting`` (``train.device``, ``--device``) names the
    option in errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"{setting} must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{setting}={name} but no CUDA device is available; use auto or cpu")
    return torch.device(name)
