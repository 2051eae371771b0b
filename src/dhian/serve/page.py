"""The web page at ``/``: type a text, see the model's answer, explore its attention.

Owns :func:`page_html`, one self-contained HTML document (CSS and JS inline, no CDN; a
Content-Security-Policy allows requests to this server only). The page posts to the task
endpoint of the model kind (``/translate``, ``/classify``, ``/generate``, ``/fill-mask``, ``/tag``,
``/answer`` with a context box), shows
the result, then posts to ``/attention`` and renders the payload with the attention viewer of
:mod:`dhian.viz` in API mode (``window.dhianViewer.render(el, payload)``). For translation with
a beam > 1 the beam output is sent as ``target``, so the attention shown is that of the output
shown; for generation the attention is over prompt + continuation.

A causal LM with a chat template also gets a chat box: the conversation is kept in the page,
each turn posts it to ``/v1/chat/completions`` with ``stream: true`` and reads the server-sent
events with ``fetch`` and a stream reader, appending each delta as it arrives; "new chat"
clears it. Every text the page shows (model output, user input, errors) is set with
``textContent``, never as HTML.
Test hooks: ``window.dhianServe.state`` (``busy``, ``runs``, ``error``, ``result``) and
``window.dhianServe.chat`` (``state``: ``busy``, ``turns``, ``error``, ``messages``;
``send(text)``, ``reset()``).
Imports: the standard library and :mod:`dhian.viz` (viewer assets).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from dhian.viz import viewer_assets

__all__ = ["page_html"]

_CSS = """
body { margin: 0; background: #f6f6f8; color: #1d1d1f;
  font: 14px/1.5 ui-sans-serif, system-ui, "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 18px 22px 40px; }
header { display: flex; align-items: baseline; gap: 14px; flex-wrap: wrap; margin-bottom: 12px; }
h1 { font-size: 20px; margin: 0; font-weight: 650; }
.chip { background: #e9e9ee; border-radius: 10px; padding: 1px 9px; font-size: 12px; color: #444; }
form { background: #fff; border: 1px solid #e3e3e8; border-radius: 12px; padding: 14px 16px;
  box-shadow: 0 1px 2px rgba(0,0,0,.04); }
textarea { width: 100%; box-sizing: border-box; min-height: 64px; font: inherit; font-size: 15px;
  padding: 8px 10px; border: 1px solid #c9c9cf; border-radius: 8px; resize: vertical; }
.row { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; margin-top: 10px; }
.row label { font-size: 12.5px; color: #555; display: flex; gap: 6px; align-items: center; }
.row input { width: 76px; font: inherit; padding: 3px 6px; border: 1px solid #c9c9cf;
  border-radius: 6px; }
button { font: inherit; font-weight: 600; background: #1d4ed8; color: #fff; border: 0;
  border-radius: 8px; padding: 7px 18px; cursor: pointer; }
button:disabled { background: #93a4d8; cursor: progress; }
.hint { font-size: 12px; color: #777; }
#result { margin: 14px 0; background: #fff; border: 1px solid #e3e3e8; border-radius: 12px;
  padding: 12px 16px; min-height: 24px; }
#result[data-state=idle] { color: #888; }
#result[data-state=error] { color: #b00020; border-color: #f1b5bf; background: #fff6f7; }
.answer { font-size: 17px; font-weight: 600; }
.sub { font-size: 12px; color: #666; margin-top: 4px; }
.prompt { color: #777; }
.bar { display: flex; align-items: center; gap: 8px; margin: 3px 0; font-size: 13px; }
.bar span:first-child { width: 140px; overflow: hidden; text-overflow: ellipsis; }
.bar i { display: block; height: 12px; background: #1d4ed8; border-radius: 3px; }
.mask { margin-top: 6px; } .mask b { margin-right: 8px; }
#chat { margin: 14px 0; background: #fff; border: 1px solid #e3e3e8; border-radius: 12px;
  padding: 12px 16px; }
#chat h2 { font-size: 15px; margin: 0 0 8px; }
#chat-log { max-height: 420px; overflow-y: auto; display: flex; flex-direction: column; gap: 8px;
  margin-bottom: 10px; }
.msg { white-space: pre-wrap; border-radius: 10px; padding: 7px 11px; max-width: 85%; }
.msg.user { align-self: flex-end; background: #1d4ed8; color: #fff; }
.msg.assistant { align-self: flex-start; background: #f0f0f4; }
.msg.error { align-self: stretch; background: #fff6f7; color: #b00020; }
#chat-form { display: flex; gap: 8px; align-items: flex-end; }
#chat-form textarea { min-height: 44px; }
#chat-form button { white-space: nowrap; }
button.plain { background: #e9e9ee; color: #1d1d1f; font-weight: 500; }
#viewer-host .dhian-viewer { border: 1px solid #e3e3e8; border-radius: 12px; }
"""

_JS = r"""
(function () {
"use strict";
const CFG = JSON.parse(document.getElementById("dhian-serve-config").textContent);
const $ = (id) => document.getElementById(id);
const state = { busy: false, runs: 0, error: null, result: null };
window.dhianServe = { state, submit: () => run() };

function node(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text != null) n.textContent = text;
  return n;
}

async function post(path, body) {
  const res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json",
    Accept: "application/json" }, body: JSON.stringify(body) });
  let data = null;
  try { data = await res.json(); } catch (err) { data = { error: res.status + " " + res.statusText }; }
  if (!res.ok) throw new Error((data && data.error) || ("HTTP " + res.status));
  return data;
}

function num(id, fallback) {
  const el = $(id);
  if (!el || el.value === "") return fallback;
  const v = Number(el.value);
  return Number.isFinite(v) ? v : fallback;
}

function show(parts) {
  const box = $("result");
  box.textContent = "";
  for (const p of parts) box.appendChild(p);
}

async function runTask(text) {
  // returns {parts: [DOM nodes], attention: {text, target} | null}
  if (CFG.kind === "translation") {
    const beam = num("beam", 1);
    const d = await post("/translate", { text, beam });
    const r = d.results[0];
    const sub = `beam ${beam} · log p ${r.log_prob.toFixed(2)} · ${r.tokens.length} tokens`
      + (r.truncated ? " · source truncated" : "");
    return { data: d, parts: [node("div", "answer", r.translation), node("div", "sub", sub)],
      attention: { text, target: beam > 1 ? r.translation : null } };
  }
  if (CFG.kind === "classification") {
    const d = await post("/classify", { text });
    const r = d.results[0];
    const parts = [node("div", "answer", r.label)];
    for (const [name, p] of Object.entries(r.probs)) {
      const bar = node("div", "bar");
      const i = node("i"); i.style.width = Math.round(p * 240) + "px";
      bar.append(node("span", null, name), i, node("span", null, p.toFixed(3)));
      parts.push(bar);
    }
    return { data: d, parts, attention: { text, target: null } };
  }
  if (CFG.kind === "lm") {
    const body = { prompt: text, max_new_tokens: num("max_new_tokens", 40),
      temperature: num("temperature", 0.8) };
    const seed = num("seed", null);
    if (seed != null) body.seed = seed;
    const d = await post("/generate", body);
    const answer = node("div", "answer");
    answer.append(node("span", "prompt", text), node("span", null, d.text));
    return { data: d, parts: [answer], attention: { text: text + d.text, target: null } };
  }
  if (CFG.kind === "mlm") {
    const d = await post("/fill-mask", { text, top_k: num("top_k", 5) });
    const parts = d.masks.map((cands, m) => {
      const row = node("div", "mask");
      row.appendChild(node("b", null, `${CFG.maskToken || "mask"} #${m + 1}`));
      row.appendChild(node("span", null, cands.map((c) => `${c.token} ${c.prob.toFixed(3)}`).join(" · ")));
      return row;
    });
    return { data: d, parts, attention: { text, target: null } };
  }
  if (CFG.kind === "token_classification") {
    const d = await post("/tag", { text });
    const r = d.results[0];
    const line = node("div", "answer");
    for (const t of r.tokens) {
      line.append(node("span", t.label === "O" ? null : "tag", t.label === "O" ? t.text : `${t.text}/${t.label}`), " ");
    }
    const ents = r.entities.map((e) => `${e.type}: ${e.text}`).join(" · ") || "no entities";
    return { data: d, parts: [line, node("div", "sub", ents)], attention: { text, target: null } };
  }
  if (CFG.kind === "question_answering") {
    const context = $("context").value;
    const d = await post("/answer", { question: text, context });
    const sub = `score ${d.score.toFixed(2)} · no-answer score ${d.null_score.toFixed(2)}`;
    return { data: d, parts: [node("div", "answer", d.text || "(no answer)"), node("div", "sub", sub)],
      attention: { text, target: null, context } };
  }
  return { data: null, parts: [node("div", "sub", "attention only")], attention: { text, target: null } };
}

async function run(ev) {
  if (ev) ev.preventDefault();
  if (state.busy) return;
  const text = $("text").value;
  if (!text.trim()) {
    state.error = "type a text first"; state.runs += 1;
    $("result").dataset.state = "error";
    show([node("div", null, state.error)]);
    return;
  }
  state.busy = true; state.error = null;
  $("go").disabled = true;
  $("result").dataset.state = "busy";
  show([node("div", "sub", "working…")]);
  try {
    const task = await runTask(text);
    state.result = task.data;
    show(task.parts);
    if (CFG.hasAttention && task.attention) {
      const body = { text: task.attention.text };
      if (task.attention.target != null) body.target = task.attention.target;
      if (task.attention.context) body.context = task.attention.context;
      const payload = await post("/attention", body);
      const host = $("viewer-host");
      host.textContent = "";
      const el = node("div", "dhian-viewer");
      el.id = "viewer";
      host.appendChild(el);
      await window.dhianViewer.render(el, payload);
    }
    $("result").dataset.state = "done";
  } catch (err) {
    state.error = String(err && err.message || err);
    $("result").dataset.state = "error";
    show([node("div", null, "error: " + state.error)]);
  } finally {
    state.busy = false; state.runs += 1;
    $("go").disabled = false;
  }
}

$("form").addEventListener("submit", run);
$("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(e);
});

// ---- chat box (causal LMs with a chat template): /v1/chat/completions, streamed -------------
const chat = { busy: false, turns: 0, error: null, messages: [] };
window.dhianServe.chat = { state: chat, send: (text) => sendChat(text), reset: () => resetChat() };

function bubble(role, text) {
  const n = node("div", "msg " + role, text);
  $("chat-log").appendChild(n);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return n;
}

function resetChat() {
  if (chat.busy) return;
  chat.messages = []; chat.error = null;
  $("chat-log").textContent = "";
}

async function readEvents(res, onData) {
  // server-sent events over fetch: "data: {...}" blocks separated by a blank line
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
    if (done) return;
  }
}

async function sendChat(text) {
  if (chat.busy || !text.trim()) return;
  chat.busy = true; chat.error = null;
  $("chat-send").disabled = true;
  const asked = chat.messages.concat([{ role: "user", content: text }]);
  bubble("user", text);
  const reply = bubble("assistant", "");
  let answer = "";
  try {
    const body = { model: CFG.name, messages: asked, stream: true,
      max_tokens: num("chat_max_tokens", 200), temperature: num("chat_temperature", 0.7) };
    const res = await fetch("/v1/chat/completions", { method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body) });
    if (!res.ok) {
      let data = null;
      try { data = await res.json(); } catch (err) { data = null; }
      throw new Error((data && data.error && data.error.message) || ("HTTP " + res.status));
    }
    await readEvents(res, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message || "generation failed");
      const choice = chunk.choices && chunk.choices[0];
      if (choice && choice.delta && choice.delta.content) {
        answer += choice.delta.content;
        reply.textContent = answer;
        $("chat-log").scrollTop = $("chat-log").scrollHeight;
      }
    });
    chat.messages = asked.concat([{ role: "assistant", content: answer }]);
    $("chat-text").value = "";
  } catch (err) {
    chat.error = String(err && err.message || err);
    reply.remove();
    bubble("error", "error: " + chat.error);
  } finally {
    chat.busy = false; chat.turns += 1;
    $("chat-send").disabled = false;
  }
}

if (CFG.chat) {
  $("chat-form").addEventListener("submit", (e) => { e.preventDefault(); sendChat($("chat-text").value); });
  $("chat-text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); sendChat($("chat-text").value); }
  });
  $("chat-reset").addEventListener("click", resetChat);
}
})();
"""

_VERB = {
    "translation": "Translate",
    "classification": "Classify",
    "lm": "Generate",
    "mlm": "Fill mask",
    "token_classification": "Tag",
    "question_answering": "Answer",
}
_PLACEHOLDER = {
    "translation": "A sentence to translate",
    "classification": "A text to classify",
    "lm": "A prompt to continue",
    "mlm": "A sentence with {mask} in it",
    "token_classification": "A sentence to tag",
    "question_answering": "A question about the context",
}


def _controls(kind: str, max_beam: int) -> str:
    """The extra inputs of a model kind (beam, sampling, top-k)."""
    if kind == "translation":
        return f'<label>beam <input id="beam" type="number" min="1" max="{max_beam}" value="1"></label>'
    if kind == "lm":
        return (
            '<label>new tokens <input id="max_new_tokens" type="number" min="0" max="1024" '
            'value="40"></label><label>temperature <input id="temperature" type="number" '
            'min="0" step="0.1" value="0.8"></label><label>seed <input id="seed" type="number" '
            'min="0" placeholder="random"></label>'
        )
    if kind == "mlm":
        return '<label>top-k <input id="top_k" type="number" min="1" max="100" value="5"></label>'
    if kind == "question_answering":
        return '<label>context <textarea id="context" rows="4" cols="60"></textarea></label>'
    return ""


_CHAT = """<section id="chat">
<h2>Chat</h2>
<div id="chat-log" aria-live="polite"></div>
<form id="chat-form">
<textarea id="chat-text" maxlength="{max_chars}" placeholder="Message (Enter sends, Shift+Enter \
starts a new line)"></textarea>
<button id="chat-send" type="submit">Send</button>
<button id="chat-reset" class="plain" type="button">New chat</button>
</form>
<div class="row"><label>max tokens <input id="chat_max_tokens" type="number" min="1" \
value="200"></label><label>temperature <input id="chat_temperature" type="number" min="0" \
max="2" step="0.1" value="0.7"></label><span class="hint">OpenAI-compatible: POST \
/v1/chat/completions</span></div>
</section>
"""


def page_html(info: Mapping[str, Any]) -> str:
    """The page for a server described by ``info``: ``name``, ``kind``, ``model_type``,
    ``endpoints``, ``max_chars``, ``max_beam``, ``mask_token``, ``chat`` (as in /health)."""
    kind = str(info["kind"])
    name = html.escape(str(info["name"]))
    mask = str(info.get("mask_token") or "[MASK]")
    config = {
        "kind": kind,
        "hasAttention": "/attention" in info["endpoints"],
        "maxChars": int(info["max_chars"]),
        "maskToken": info.get("mask_token"),
        "chat": bool(info.get("chat")),
        "name": str(info["name"]),
    }
    config_json = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e")
    css, js = viewer_assets()
    chips = "".join(
        f'<span class="chip">{html.escape(str(c))}</span>'
        for c in (kind, info["model_type"], *info["endpoints"])
    )
    placeholder = html.escape(_PLACEHOLDER.get(kind, "A text").format(mask=mask), quote=True)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; \
script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data: blob:">
<title>dhian · {name}</title>
<style>{_CSS}</style>
<style>{css}</style>
</head>
<body>
<main>
<header><h1>dhian · {name}</h1>{chips}</header>
<form id="form">
<textarea id="text" maxlength="{int(info["max_chars"])}" placeholder="{placeholder}"></textarea>
<div class="row"><button id="go" type="submit">{_VERB.get(kind, "Show attention")}</button>
{_controls(kind, int(info.get("max_beam", 16)))}
<span class="hint">Ctrl+Enter submits · JSON API: <a href="/docs">/docs</a></span></div>
</form>
<div id="result" data-state="idle">The answer appears here, then its attention below.</div>
{_CHAT.format(max_chars=int(info["max_chars"])) if config["chat"] else ""}
<div id="viewer-host"></div>
</main>
<script type="application/json" id="dhian-serve-config">{config_json}</script>
<script>{js}</script>
<script>{_JS}</script>
</body>
</html>
"""
