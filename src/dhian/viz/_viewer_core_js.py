"""The attention viewer's JavaScript, part 1: data decoding, state, controls, public API.

Owns :data:`CORE_JS`, the viewer's ``Viewer`` class and the ``window.dhianViewer`` entry
point (``render(target, payload)``, ``load(target, url)``, ``instances``, ``state``). Drawing
lives in :mod:`dhian.viz._viewer_draw_js`; :mod:`dhian.viz.html` wraps both in one IIFE with
the style constants (``STYLE``) injected. Plain ES2020, no libraries, no network access except
``load(url)`` when a server page asks for it. Imports nothing.
"""

from __future__ import annotations

__all__ = ["CORE_JS"]

CORE_JS = r"""
const FONT = "ui-sans-serif, system-ui, 'DejaVu Sans', 'Liberation Sans', Arial, sans-serif";
const LUT_RGB = STYLE.lut.map((h) => [
  parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)]);
const U8SQRT = new Float32Array(256);
for (let q = 0; q < 256; q++) U8SQRT[q] = (q / 255) * (q / 255);
const CACHE_MAX = 48;

function headName(kind, h) {
  // the payload's label of head h (e.g. "h3 (kv1)": grouped-query heads), else "head h"
  return (kind.head_labels && kind.head_labels[h] != null) ? String(kind.head_labels[h]) : "head " + h;
}

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children || []) node.appendChild(c);
  return node;
}

function b64ToBytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

async function inflate(bytes) {
  if (typeof DecompressionStream === "undefined") {
    throw new Error("this browser has no DecompressionStream; export with compress=False");
  }
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

class Tensor {
  // One decoded attention kind: quantised (L, H, Tq, Tk) values and a small matrix cache.
  constructor(kind, raw) {
    this.L = kind.layers; this.H = kind.heads; this.tq = kind.tq; this.tk = kind.tk;
    const n = this.L * this.H * this.tq * this.tk;
    if (kind.encoding === "u16") {
      this.q = new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
      this.table = null;
    } else if (kind.encoding === "u8sqrt") {
      this.q = raw; this.table = U8SQRT;
    } else {
      throw new Error("unknown encoding " + kind.encoding);
    }
    if (this.q.length !== n) throw new Error(`kind ${kind.id}: ${this.q.length} values, expected ${n}`);
    this.cache = new Map();
  }

  matrix(layer, head) {
    // Float32Array (Tq * Tk) of one head, or the mean over heads when head < 0.
    const key = layer * 4096 + (head + 1);
    const hit = this.cache.get(key);
    if (hit) { this.cache.delete(key); this.cache.set(key, hit); return hit; }
    const n = this.tq * this.tk;
    const out = new Float32Array(n);
    const heads = head < 0 ? [...Array(this.H).keys()] : [head];
    for (const h of heads) {
      const off = (layer * this.H + h) * n;
      const q = this.q;
      if (this.table) { const t = this.table; for (let i = 0; i < n; i++) out[i] += t[q[off + i]]; }
      else { for (let i = 0; i < n; i++) out[i] += q[off + i] / 65535; }
    }
    if (heads.length > 1) for (let i = 0; i < n; i++) out[i] /= heads.length;
    this.cache.set(key, out);
    if (this.cache.size > CACHE_MAX) this.cache.delete(this.cache.keys().next().value);
    return out;
  }
}

class Viewer {
  constructor(root, payload) {
    if (!payload || !Array.isArray(payload.kinds) || !payload.kinds.length) {
      throw new Error("dhianViewer: payload has no attention kinds");
    }
    this.root = root; this.payload = payload; this.tensors = new Map(); this.seq = 0;
    this.state = { ready: false, busy: false, kind: payload.kinds[0].id, layer: 0, head: -1, scale: "unit",
      hover: null, highlight: null, timings: {}, error: null, tq: 0, tk: 0 };
    this.build();
  }

  build() {
    const p = this.payload;
    this.root.textContent = "";
    this.root.classList.add("dhian-viewer");
    const meta = el("div", { class: "dv-meta" });
    for (const [k, v] of Object.entries(p.meta || {})) {
      const chip = el("span", { class: "dv-chip" }, [el("b", { text: k + ": " })]);
      chip.appendChild(document.createTextNode(typeof v === "object" ? JSON.stringify(v) : String(v)));
      meta.appendChild(chip);
    }
    this.kindSel = el("select", { "data-role": "kind" });
    for (const k of p.kinds) this.kindSel.appendChild(el("option", { value: k.id, text: k.label }));
    this.layerSel = el("select", { "data-role": "layer" });
    this.headSel = el("select", { "data-role": "head" });
    this.scaleSel = el("select", { "data-role": "scale" }, [
      el("option", { value: "unit", text: "0 – 1" }), el("option", { value: "max", text: "0 – max" }),
      el("option", { value: "row", text: "0 – row max" })]);
    this.legend = el("div", { class: "dv-legend", "data-role": "legend" });
    const label = (text, control) => el("label", {}, [el("span", { text }), control]);
    this.heat = el("canvas", { "data-role": "heatmap" });
    this.lines = el("canvas", { "data-role": "headview" });
    this.scroller = el("div", { class: "dv-scroll" }, [this.lines]);
    this.heatCaption = el("div", { class: "dv-caption" });
    this.linesCaption = el("div", { class: "dv-caption" });
    this.info = el("div", { class: "dv-info", "data-role": "info",
      text: "Hover a token (or a heatmap cell) to see where it attends." });
    this.status = el("div", { class: "dv-status", "data-role": "status", text: "decoding…" });
    this.root.append(
      el("div", { class: "dv-header" }, [el("h2", { class: "dv-title", text: p.title || "Attention" }), meta]),
      el("div", { class: "dv-controls" }, [label("attention", this.kindSel), label("layer", this.layerSel),
        label("head", this.headSel), this.legend, label("colour scale", this.scaleSel)]),
      el("div", { class: "dv-body" }, [
        el("div", { class: "dv-panel dv-heat" }, [el("h3", { text: "Heatmap" }), this.heatCaption, this.heat]),
        el("div", { class: "dv-panel dv-lines" }, [el("h3", { text: "Head view" }), this.linesCaption, this.scroller]),
      ]),
      this.info, this.status);
    this.kindSel.addEventListener("change", () => this.setKind(this.kindSel.value));
    this.layerSel.addEventListener("change", () => this.setLayer(Number(this.layerSel.value)));
    this.headSel.addEventListener("change", () => this.setHead(Number(this.headSel.value)));
    this.scaleSel.addEventListener("change", () => { this.state.scale = this.scaleSel.value; this.refresh(); });
    attachHover(this);
  }

  kind() { return this.payload.kinds.find((k) => k.id === this.state.kind); }

  tokens(side) {
    const t = this.payload.tokens;
    return side === "tgt" && t.tgt ? t.tgt : t.src;
  }

  async tensor(kind) {
    if (!this.tensors.has(kind.id)) {
      const t0 = performance.now();
      let raw = b64ToBytes(kind.data);
      if (kind.compression === "zlib") raw = await inflate(raw);
      else if (kind.compression !== "none") throw new Error("unknown compression " + kind.compression);
      this.tensors.set(kind.id, new Tensor(kind, raw));
      this.state.timings["decode_" + kind.id] = Math.round(performance.now() - t0);
    }
    return this.tensors.get(kind.id);
  }

  fillOptions() {
    const k = this.kind();
    this.state.layer = Math.min(Math.max(this.state.layer, 0), k.layers - 1);
    if (this.state.head >= k.heads) this.state.head = -1;
    this.layerSel.textContent = "";
    for (let l = 0; l < k.layers; l++) this.layerSel.appendChild(el("option", { value: l, text: "layer " + l }));
    this.headSel.textContent = "";
    this.headSel.appendChild(el("option", { value: -1, text: "average of heads" }));
    for (let h = 0; h < k.heads; h++) this.headSel.appendChild(el("option", { value: h, text: headName(k, h) }));
    this.kindSel.value = k.id; this.layerSel.value = this.state.layer; this.headSel.value = this.state.head;
    this.legend.textContent = "";
    const sw = (h) => {
      const s = el("span", { class: "dv-swatch", "data-head": h, title: h < 0 ? "average of heads" : headName(k, h),
        text: h < 0 ? "avg" : String(h) });
      s.style.background = h < 0 ? "#555" : STYLE.palette[h % STYLE.palette.length];
      s.addEventListener("click", () => this.setHead(h));
      return s;
    };
    if (k.heads > 1) { this.legend.appendChild(sw(-1)); for (let h = 0; h < k.heads; h++) this.legend.appendChild(sw(h)); }
  }

  async setKind(id) {
    if (!this.payload.kinds.some((k) => k.id === id)) throw new Error("no attention kind " + id);
    this.state.kind = id; this.state.hover = null; this.fillOptions(); return this.refresh();
  }
  async setLayer(layer) { this.state.layer = layer; this.layerSel.value = layer; return this.refresh(); }
  async setHead(head) { this.state.head = head; this.headSel.value = head; return this.refresh(); }

  async refresh() {
    const seq = ++this.seq;
    const t0 = performance.now();
    this.state.busy = true; this.sync();
    try {
      const k = this.kind();
      const tensor = await this.tensor(k);
      if (seq !== this.seq) return this;
      const s = this.state;
      const heads = s.head < 0 ? [...Array(k.heads).keys()] : [s.head];
      this.view = { kind: k, tensor, qTokens: this.tokens(k.query), kTokens: this.tokens(k.key),
        M: tensor.matrix(s.layer, s.head), heads: heads.map((h) => ({ head: h, M: tensor.matrix(s.layer, h),
          color: STYLE.palette[h % STYLE.palette.length] })) };
      s.tq = k.tq; s.tk = k.tk;
      if (s.hover && (s.hover.q >= k.tq || s.hover.k >= k.tk)) s.hover = null;
      const t1 = performance.now();
      drawHeatBase(this);
      const t2 = performance.now();
      layoutLines(this);
      this.applyHover();
      s.timings.heatmap = Math.round(t2 - t1);
      s.timings.refresh = Math.round(performance.now() - t0);
      for (const node of this.legend.children) node.classList.toggle("dv-on", Number(node.dataset.head) === s.head);
      this.heatCaption.textContent = `${k.label} · rows: ${k.query === "tgt" ? "output" : "query"} tokens (${k.tq}), `
        + `columns: ${k.key === "src" && k.query === "tgt" ? "source" : "key"} tokens (${k.tk}) · `
        + (s.head < 0 ? "average of " + k.heads + " heads" : headName(k, s.head));
      this.linesCaption.textContent = (s.head < 0 ? `all ${k.heads} heads, colour = head` : headName(k, s.head))
        + " · left attends to right · line opacity = weight";
      this.status.textContent = `${k.layers} layers × ${k.heads} heads × ${k.tq}×${k.tk} (${k.encoding}, ${k.compression})`
        + ` · decoded in ${s.timings["decode_" + k.id]} ms · drawn in ${s.timings.refresh} ms`;
      s.error = null;
    } catch (err) {
      this.state.error = String(err && err.message || err);
      this.status.textContent = "error: " + this.state.error;
      this.status.classList.add("dv-error");
    }
    if (seq === this.seq) this.state.busy = false;
    this.sync();
    return this;
  }

  hover(axis, q, k) {
    // axis "row" (a query token q), "col" (a key token k), "cell" (q, k) or null to clear.
    this.state.hover = axis ? { axis, q: q == null ? null : q, k: k == null ? null : k } : null;
    this.applyHover();
    this.sync();
  }

  applyHover() {
    const s = this.state; const v = this.view;
    if (!v) return;
    const h = s.hover; const tk = v.kind.tk; const tq = v.kind.tq;
    const r4 = (x) => Math.round(x * 1e4) / 1e4;
    let hl = null;
    if (h && (h.axis === "row" || h.axis === "cell")) {
      const values = Array.from(v.M.subarray(h.q * tk, (h.q + 1) * tk), r4);
      hl = { axis: h.axis, index: h.q, token: v.qTokens[h.q], values, other: v.kTokens };
      if (h.axis === "cell") { hl.cell = [h.q, h.k]; hl.value = values[h.k]; }
    } else if (h && h.axis === "col") {
      const values = []; for (let i = 0; i < tq; i++) values.push(r4(v.M[i * tk + h.k]));
      hl = { axis: "col", index: h.k, token: v.kTokens[h.k], values, other: v.qTokens };
    }
    if (hl) {
      hl.top = hl.values.map((x, i) => [x, i]).sort((a, b) => b[0] - a[0]).slice(0, 5)
        .map(([x, i]) => ({ index: i, token: hl.other[i], value: x }));
      delete hl.other;
    }
    s.highlight = hl;
    drawHeatOverlay(this);
    drawLines(this);
    this.info.textContent = describe(hl, v);
  }

  sync() {
    const s = this.state; const d = this.root.dataset;
    d.ready = s.ready ? "1" : "0"; d.busy = s.busy ? "1" : "0"; d.kind = s.kind; d.layer = s.layer; d.head = s.head;
    d.hover = s.hover ? `${s.hover.axis}:${s.hover.q == null ? "" : s.hover.q}:${s.hover.k == null ? "" : s.hover.k}` : "";
    d.error = s.error || "";
  }
}

function describe(hl, v) {
  if (!hl) return "Hover a token (or a heatmap cell) to see where it attends.";
  const top = hl.top.map((t) => `“${t.token}” ${t.value.toFixed(3)}`).join(" · ");
  if (hl.axis === "cell") {
    const [i, j] = hl.cell;
    return `“${v.qTokens[i]}” (#${i}) → “${v.kTokens[j]}” (#${j}): ${hl.value.toFixed(3)}   |   row top: ${top}`;
  }
  if (hl.axis === "row") return `“${hl.token}” (#${hl.index}) attends to: ${top}`;
  return `“${hl.token}” (#${hl.index}) is attended by: ${top}`;
}

async function render(target, payload) {
  const root = typeof target === "string" ? document.querySelector(target) : target;
  if (!root) throw new Error("dhianViewer.render: no element " + target);
  const data = typeof payload === "string" ? JSON.parse(payload) : payload;
  const t0 = performance.now();
  const viewer = new Viewer(root, data);
  api.instances.push(viewer);
  viewer.fillOptions();
  await viewer.refresh();
  viewer.state.timings.total = Math.round(performance.now() - t0);
  viewer.state.ready = !viewer.state.error;
  viewer.sync();
  root.dispatchEvent(new CustomEvent("dhian:ready", { detail: viewer, bubbles: true }));
  return viewer;
}

async function load(target, url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  if (!res.ok) throw new Error(`dhianViewer.load: ${url} answered ${res.status}`);
  return render(target, await res.json());
}

function autoload() {
  for (const root of document.querySelectorAll(".dhian-viewer[data-dv-autoload]")) {
    root.removeAttribute("data-dv-autoload");
    const dataId = root.getAttribute("data-dv-data"); const url = root.getAttribute("data-dv-api");
    const fail = (err) => { root.dataset.error = String(err); root.textContent = "dhian viewer: " + err; };
    if (dataId) {
      const script = document.getElementById(dataId);
      try { render(root, JSON.parse(script.textContent)).catch(fail); } catch (err) { fail(err); }
    } else if (url) {
      load(root, url).catch(fail);
    }
  }
}

const api = { __dhian: 1, render, load, autoload, instances: [], Viewer,
  get state() { const n = api.instances.length; return n ? api.instances[n - 1].state : null; },
  get viewer() { const n = api.instances.length; return n ? api.instances[n - 1] : null; } };
"""
