"""The ONNX Runtime peer of the BERT scenario (optional: ``pip install onnxruntime onnx``).

The HF ``BertModel`` (loaded from dhian's export, so the same weights) is exported with
``torch.onnx.export`` (the TorchScript exporter, opset 17, eager attention, dynamic batch and
length), then put through ONNX Runtime's own transformer optimizer
(``onnxruntime.transformers.optimizer.optimize_model``, ``model_type="bert"``: fused
EmbedLayerNormalization / Attention / SkipLayerNormalization / BiasGelu — the configuration ORT
recommends for BERT on CPU), and that graph is dynamically quantized
(``onnxruntime.quantization.quantize_dynamic``, int8 weights — per tensor, ORT's default — and
uint8 activations quantized per call; attention becomes QAttention). Sessions run on the CPU
execution provider with ``ORT_ENABLE_ALL`` and the torch thread count as intra-op threads.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: how to get the optional peer
INSTALL = "pip install onnxruntime onnx"


def unavailable() -> str | None:
    """Why the ONNX Runtime peer cannot run here, or None when it can."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        from onnxruntime.quantization import quantize_dynamic  # noqa: F401
    except ImportError as exc:
        return f"onnxruntime/onnx are not installed ({exc}); {INSTALL}"
    return None


class _BertOutputs(nn.Module):
    """HF BertModel as (ids, mask) → (last hidden (B, T, E), pooled (B, E)) for the exporter."""

    def __init__(self, hf: Any) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out = self.hf(input_ids=ids, attention_mask=mask)
        return out.last_hidden_state, out.pooler_output


def export(hf_dir: Path, out_dir: Path, heads: int, hidden: int) -> dict[str, Path]:
    """ONNX files of the HF BERT in ``hf_dir``: ``fp32`` (optimized) and ``int8`` (optimized,
    dynamically quantized). Raises RuntimeError saying which step failed. The exporter's
    tracing and deprecation warnings are silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _export(hf_dir, out_dir, heads, hidden)


def _export(hf_dir: Path, out_dir: Path, heads: int, hidden: int) -> dict[str, Path]:
    import onnx
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    out_dir.mkdir(parents=True, exist_ok=True)
    raw, fp32, int8 = out_dir / "bert.onnx", out_dir / "bert-opt.onnx", out_dir / "bert-int8.onnx"
    step = "torch.onnx.export"
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)  # ORT's quantizer advertises pre-processing at WARNING
        hf = transformers.BertModel.from_pretrained(hf_dir, attn_implementation="eager").eval()
        ids = torch.randint(5, 100, (2, 8))  # (B, T) example; both axes are dynamic
        dynamic = {"ids": {0: "batch", 1: "length"}, "mask": {0: "batch", 1: "length"}}
        torch.onnx.export(
            _BertOutputs(hf),
            (ids, torch.ones_like(ids)),
            str(raw),
            input_names=["ids", "mask"],
            output_names=["last_hidden", "pooled"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
        step = "onnxruntime.transformers.optimizer.optimize_model"
        optimize_model(
            str(raw), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
        ).save_model_to_file(str(fp32))
        step = "onnxruntime.quantization.quantize_dynamic"
        quantize_dynamic(
            str(fp32),
            str(int8),
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    except Exception as exc:  # any exporter/optimizer/quantizer failure is reported, not hidden
        raise RuntimeError(f"{step} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        root.setLevel(level)
    return {"fp32": fp32, "int8": int8}


def fused_ops(path: Path) -> dict[str, int]:
    """How many nodes of each fused/quantized kind the ONNX graph at ``path`` has."""
    import onnx

    kinds = ["Attention", "QAttention", "EmbedLayerNormalization", "QEmbedLayerNormalization"]
    kinds += ["SkipLayerNormalization", "BiasGelu", "MatMulInteger"]
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    return {k: ops.count(k) for k in kinds if ops.count(k)}


class OrtBert:
    """An ONNX Runtime session on one of :func:`export`'s files; ``run(ids, mask)`` → last
    hidden (B, T, E) and pooled (B, E) as torch tensors."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """ids, mask (B, T) long → (last hidden (B, T, E), pooled (B, E))."""
        feed = {"ids": ids.numpy(), "mask": mask.numpy()}
        hidden, pooled = self.session.run(None, feed)
        return torch.from_numpy(hidden), torch.from_numpy(pooled)
