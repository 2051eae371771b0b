"""Turn attention weights (torch tensors, numpy arrays, lists) into checked numpy arrays.

Owns input validation for :mod:`dhian.viz`: every shape error names the function, the shape
expected (with the lengths implied by the tokens) and the shape received.
Imports: numpy only. Torch tensors are recognised by duck typing, so torch is never imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["as_layers", "as_matrix", "check_tokens", "to_numpy"]


def to_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """A numpy copy of ``x`` (torch tensor on any device, numpy array or nested list)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().float().numpy()
    return np.array(x, dtype=dtype)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in getattr(x, "shape", np.shape(x)))


def check_tokens(tokens: Sequence[str], name: str, fn: str) -> list[str]:
    """``tokens`` as a list of str (a bare string is refused: it would plot characters)."""
    if isinstance(tokens, str):
        raise ValueError(f"{fn}: {name} must be a list of token strings, received one str")
    return [str(t) for t in tokens]


def as_matrix(weights: Any, fn: str, expected: tuple[int, int], names: str) -> np.ndarray:
    """Weights as a (rows, cols) array equal to ``expected``; ``names`` spells it, e.g. "(Tt, Ts)"."""
    arr = to_numpy(weights)
    if arr.ndim == 3 and arr.shape[0] == 1:  # a batch of one: accept and squeeze
        arr = arr[0]
    if arr.shape != expected:
        raise ValueError(
            f"{fn}: weights must have shape {names} = {expected} from the tokens given, "
            f"received {_shape(arr)}"
        )
    _check_finite(arr, fn)
    return arr


def as_layers(
    weights: Any,
    fn: str,
    expected_q: int | None = None,
    expected_k: int | None = None,
    dtype: Any = np.float64,
) -> np.ndarray:
    """Weights as an (L, H, Tq, Tk) array from a 4-D array or a list of (H, Tq, Tk) per layer.

    ``expected_q``/``expected_k`` (token counts) are checked when given.
    """
    if isinstance(weights, list | tuple):
        layers = [to_numpy(w, dtype) for w in weights]
        if not layers:
            raise ValueError(f"{fn}: weights is an empty list; expected one (H, Tq, Tk) per layer")
        for i, layer in enumerate(layers):
            if layer.ndim != 3 or layer.shape != layers[0].shape:
                raise ValueError(
                    f"{fn}: every layer must be (H, Tq, Tk) = {_shape(layers[0])}; "
                    f"received layer {i} of shape {_shape(layer)}"
                )
        arr = np.stack(layers)
    else:
        arr = to_numpy(weights, dtype)
        if arr.ndim != 4:
            hint = " (select one example, e.g. weights[:, 0])" if arr.ndim == 5 else ""
            raise ValueError(
                f"{fn}: weights must be (L, H, Tq, Tk) or a list of (H, Tq, Tk); "
                f"received shape {_shape(arr)}{hint}"
            )
    want = (
        arr.shape[0],
        arr.shape[1],
        arr.shape[2] if expected_q is None else expected_q,
        arr.shape[3] if expected_k is None else expected_k,
    )
    if arr.shape != want:
        raise ValueError(
            f"{fn}: weights must be (L, H, Tq, Tk) = {want} from the tokens given, "
            f"received {_shape(arr)}"
        )
    if 0 in arr.shape:
        raise ValueError(f"{fn}: weights has an empty dimension, received {_shape(arr)}")
    _check_finite(arr, fn)
    return arr


def _check_finite(arr: np.ndarray, fn: str) -> None:
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{fn}: weights contain {bad} NaN/inf values; expected finite weights")
