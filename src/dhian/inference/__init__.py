"""Using a trained model: the layer under :mod:`dhian.cli`, :mod:`dhian.serve` and the apps.

- :mod:`~dhian.inference.load` — the one loader (built-in name, GGUF/single file, run dir →
  ``best/`` or ``last/``, HF dir, dhian model dir) with device and precision chosen once;
- :mod:`~dhian.inference.translate` — translate sentences (sort, batch, greedy/beam, attention)
  and the server's translation batch;
- :mod:`~dhian.inference.encode` — text → ids once per task (encoder inputs, translation sources);
- :mod:`~dhian.inference.classify`, :mod:`~dhian.inference.fill_mask`,
  :mod:`~dhian.inference.generate` — the other task functions (a model + tokenizer, and a
  loaded model for the server's batches; ``complete_texts`` for any causal LM);
- :mod:`~dhian.inference.engine`, :mod:`~dhian.inference.text_engine` — continuous batching
  of a LLaMA-family model (requests join between decoding steps) in tokens, and in text with
  stop strings and streamed increments (what ``dhian serve`` runs for ``/v1``);
- :mod:`~dhian.inference.chat` — messages through a model's chat template, one reply or a
  whole conversation (``dhian chat``, ``/v1/chat/completions``);
- :mod:`~dhian.inference.capabilities` — what a loaded model is and serves (family record);
- :mod:`~dhian.inference.attention_maps` — attention extraction for every family → tokens +
  weights; :mod:`~dhian.inference.attention_report` — the PNG/JSON/HTML files of it;
- :mod:`~dhian.inference.display_tokens` — subword strings for display (▁ Ġ ## cleaned up).

Notation: B batch, Ts/Tt source/target length, H heads, L layers.
"""

from __future__ import annotations
