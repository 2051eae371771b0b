"""The attention viewer's JavaScript, part 2: canvas drawing and pointer handling.

Owns :data:`DRAW_JS`: the heatmap (one ``ImageData`` pixel per cell, scaled without smoothing,
so 512 × 512 tokens is one bitmap, not 262,144 DOM nodes) with a cached base layer and a cheap
hover overlay; the bertviz-style head view (token-to-token lines batched into one path per
head and opacity level); mouse hover on both; ``Viewer.prototype.tokenPoint`` (screen position
of a token, for tests). Uses names from :mod:`dhian.viz._viewer_core_js`. Imports nothing.
"""

from __future__ import annotations

__all__ = ["DRAW_JS"]

DRAW_JS = r"""
function setupCanvas(canvas, w, h) {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.ceil(w * dpr); canvas.height = Math.ceil(h * dpr);
  canvas.style.width = w + "px"; canvas.style.height = h + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

function clipText(ctx, text, maxW) {
  if (ctx.measureText(text).width <= maxW) return text;
  let s = text;
  while (s.length > 1 && ctx.measureText(s + "…").width > maxW) s = s.slice(0, -1);
  return s + "…";
}

function widest(ctx, toks, cap) {
  let w = 0;
  for (const t of toks) w = Math.max(w, ctx.measureText(t).width);
  return Math.min(cap, Math.ceil(w));
}

function niceStep(cell) {
  for (const s of [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000]) if (s * cell >= 34) return s;
  return 5000;
}

function copyBase(ctx, base) {
  ctx.save(); ctx.setTransform(1, 0, 0, 1, 0, 0); ctx.drawImage(base, 0, 0); ctx.restore();
}

function drawHeatBase(viewer) {
  const v = viewer.view; const tq = v.kind.tq; const tk = v.kind.tk;
  const fit = Math.min(28, 560 / Math.max(tq, tk));
  const cell = fit >= 1 ? Math.floor(fit) : Math.max(0.25, fit);  // whole pixels: crisp cells
  const labels = cell >= 9;
  const fontPx = Math.round(Math.min(12, Math.max(9, cell * 0.75)));
  const scratch = document.createElement("canvas").getContext("2d");
  scratch.font = `${fontPx}px ${FONT}`;
  const left = labels ? widest(scratch, v.qTokens, 130) + 14 : 40;
  const top = labels ? widest(scratch, v.kTokens, 130) + 14 : 26;
  const g = { cell, labels, fontPx, left, top, tq, tk, labelW: left - 14, labelH: top - 14 };
  g.width = Math.ceil(left + tk * cell + 18); g.height = Math.ceil(top + tq * cell + 38);
  viewer.heatGeom = g;
  setupCanvas(viewer.heat, g.width, g.height);
  const base = viewer.heatBase || (viewer.heatBase = document.createElement("canvas"));
  const ctx = setupCanvas(base, g.width, g.height);
  ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, g.width, g.height);
  // colour scale: "unit" 0..1, "max" 0..matrix max, "row" each row 0..its max
  const M = v.M; const scale = viewer.state.scale;
  const rowPeak = new Float32Array(tq).fill(1);
  if (scale !== "unit") {
    let all = 0;
    for (let i = 0; i < tq; i++) {
      let m = 0; for (let j = 0; j < tk; j++) m = Math.max(m, M[i * tk + j]);
      rowPeak[i] = m || 1; all = Math.max(all, m);
    }
    if (scale === "max") rowPeak.fill(all || 1);
  }
  g.rowPeak = rowPeak;
  const peak = scale === "unit" ? 1 : scale === "max" ? rowPeak[0] : NaN;
  const img = new ImageData(tk, tq); const d = img.data;
  for (let i = 0; i < tq; i++) {
    const k = 255 / rowPeak[i];
    for (let j = 0; j < tk; j++) {
      const n = i * tk + j;
      const c = LUT_RGB[Math.min(255, Math.max(0, Math.round(M[n] * k)))];
      d[4 * n] = c[0]; d[4 * n + 1] = c[1]; d[4 * n + 2] = c[2]; d[4 * n + 3] = 255;
    }
  }
  const off = document.createElement("canvas"); off.width = tk; off.height = tq;
  off.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, left, top, tk * cell, tq * cell);
  ctx.font = `${fontPx}px ${FONT}`; ctx.fillStyle = "#333"; ctx.textBaseline = "middle";
  if (labels) {
    ctx.textAlign = "right";
    for (let i = 0; i < tq; i++) ctx.fillText(clipText(ctx, v.qTokens[i], g.labelW), left - 6, top + (i + 0.5) * cell);
    ctx.textAlign = "left";
    for (let j = 0; j < tk; j++) {
      ctx.save(); ctx.translate(left + (j + 0.5) * cell, top - 6); ctx.rotate(-Math.PI / 2);
      ctx.fillText(clipText(ctx, v.kTokens[j], g.labelH), 0, 0); ctx.restore();
    }
  } else {
    const step = niceStep(cell);
    ctx.font = `10px ${FONT}`; ctx.fillStyle = "#666"; ctx.strokeStyle = "#999"; ctx.lineWidth = 1;
    ctx.textAlign = "right";
    for (let i = 0; i < tq; i += step) {
      const y = top + (i + 0.5) * cell;
      ctx.fillText(String(i), left - 7, y); ctx.beginPath(); ctx.moveTo(left - 4, y); ctx.lineTo(left, y); ctx.stroke();
    }
    ctx.textAlign = "center";
    for (let j = 0; j < tk; j += step) {
      const x = left + (j + 0.5) * cell;
      ctx.fillText(String(j), x, top - 12); ctx.beginPath(); ctx.moveTo(x, top - 4); ctx.lineTo(x, top); ctx.stroke();
    }
  }
  const barY = top + tq * cell + 14; const barW = Math.min(160, Math.max(80, tk * cell));
  for (let x = 0; x < barW; x++) {
    ctx.fillStyle = STYLE.lut[Math.min(255, Math.floor((x / barW) * 256))];
    ctx.fillRect(left + x, barY, 1.5, 10);
  }
  ctx.strokeStyle = "#bbb"; ctx.lineWidth = 1; ctx.strokeRect(left - 0.5, barY - 0.5, barW + 1, 11);
  ctx.font = `10px ${FONT}`; ctx.fillStyle = "#555"; ctx.textAlign = "left";
  const top_ = Number.isNaN(peak) ? "row max" : peak === 1 ? "1" : peak.toFixed(3);
  ctx.fillText(`0 … ${top_}  (weight)`, left + barW + 6, barY + 5);
}

function drawHeatOverlay(viewer) {
  const g = viewer.heatGeom; const v = viewer.view;
  if (!g || !viewer.heatBase) return;
  const ctx = viewer.heat.getContext("2d");
  copyBase(ctx, viewer.heatBase);
  const hl = viewer.state.highlight;
  if (!hl) return;
  const c = g.cell; const accent = STYLE.accent;
  const labelTag = (text, x, y, rotate) => {
    ctx.save(); ctx.font = `bold ${g.fontPx}px ${FONT}`; ctx.textBaseline = "middle";
    ctx.translate(x, y); if (rotate) ctx.rotate(-Math.PI / 2);
    const t = clipText(ctx, text, 130); const w = ctx.measureText(t).width;
    ctx.fillStyle = accent; ctx.fillRect(rotate ? 0 : -w - 4, -g.fontPx * 0.7, w + 4, g.fontPx * 1.4);
    ctx.fillStyle = "#000"; ctx.textAlign = rotate ? "left" : "right"; ctx.fillText(t, rotate ? 2 : -2, 0);
    ctx.restore();
  };
  ctx.strokeStyle = accent; ctx.lineWidth = 2;
  if (hl.axis === "row" || hl.axis === "cell") {
    const y = g.top + hl.index * c;
    ctx.strokeRect(g.left - 1, y - 1, g.tk * c + 2, c + 2);
    labelTag(v.qTokens[hl.index], g.left - 4, y + c / 2, false);
    if (c >= 22) {
      ctx.font = `${Math.min(11, c * 0.42)}px ${FONT}`; ctx.textAlign = "center"; ctx.textBaseline = "middle";
      hl.values.forEach((x, j) => {
        ctx.fillStyle = x / g.rowPeak[hl.index] > 0.5 ? "#000" : "#fff";
        ctx.fillText(x.toFixed(2).replace(/^0/, ""), g.left + (j + 0.5) * c, y + c / 2);
      });
    }
  }
  if (hl.axis === "col" || hl.axis === "cell") {
    const j = hl.axis === "col" ? hl.index : hl.cell[1];
    const x = g.left + j * c;
    ctx.lineWidth = hl.axis === "col" ? 2 : 1;
    ctx.strokeRect(x - 1, g.top - 1, c + 2, g.tq * c + 2);
    labelTag(v.kTokens[j], x + c / 2, g.top - 4, true);
  }
  if (hl.axis === "cell") {
    ctx.lineWidth = 3; ctx.strokeStyle = "#ff2d55";
    ctx.strokeRect(g.left + hl.cell[1] * c - 1.5, g.top + hl.cell[0] * c - 1.5, c + 3, c + 3);
  }
}

function layoutLines(viewer) {
  const v = viewer.view; const n = Math.max(v.kind.tq, v.kind.tk);
  const rowH = Math.max(14, Math.min(22, 560 / n));
  const fontPx = rowH >= 18 ? 12 : 11;
  const scratch = document.createElement("canvas").getContext("2d");
  scratch.font = `${fontPx}px ${FONT}`;
  const leftW = widest(scratch, v.qTokens, 120); const rightW = widest(scratch, v.kTokens, 120);
  const g = { rowH, fontPx, n, leftW, rightW };
  g.textL = 10 + leftW; g.x0 = g.textL + 6; g.x1 = g.x0 + 170; g.textR = g.x1 + 6;
  g.width = Math.ceil(g.textR + rightW + 12); g.height = Math.ceil(n * rowH + 8);
  viewer.linesGeom = g;
  setupCanvas(viewer.lines, g.width, g.height);
  const base = viewer.linesBase || (viewer.linesBase = document.createElement("canvas"));
  const ctx = setupCanvas(base, g.width, g.height);
  ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, g.width, g.height);
  ctx.font = `${fontPx}px ${FONT}`; ctx.fillStyle = "#222"; ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  v.qTokens.forEach((t, i) => ctx.fillText(clipText(ctx, t, leftW), g.textL, lineY(g, i)));
  ctx.textAlign = "left";
  v.kTokens.forEach((t, j) => ctx.fillText(clipText(ctx, t, rightW), g.textR, lineY(g, j)));
}

function lineY(g, i) { return 4 + (i + 0.5) * g.rowH; }

function drawLines(viewer) {
  const g = viewer.linesGeom; const v = viewer.view;
  if (!g || !viewer.linesBase) return;
  const ctx = viewer.lines.getContext("2d");
  copyBase(ctx, viewer.linesBase);
  const tq = v.kind.tq; const tk = v.kind.tk; const h = viewer.state.hover;
  const LEVELS = 10;
  const minW = h ? 0.004 : (v.heads.length > 1 ? 0.2 : 0.05);
  ctx.lineCap = "round";
  for (const hd of v.heads) {
    const paths = Array.from({ length: LEVELS }, () => new Path2D()); const used = new Uint8Array(LEVELS);
    const M = hd.M;
    const add = (i, j, w) => {
      if (w < minW) return;
      const b = Math.min(LEVELS - 1, Math.floor(Math.sqrt(w) * LEVELS));
      paths[b].moveTo(g.x0, lineY(g, i)); paths[b].lineTo(g.x1, lineY(g, j)); used[b] = 1;
    };
    if (h && h.q != null && h.axis !== "col") { for (let j = 0; j < tk; j++) add(h.q, j, M[h.q * tk + j]); }
    else if (h && h.axis === "col") { for (let i = 0; i < tq; i++) add(i, h.k, M[i * tk + h.k]); }
    else { for (let i = 0; i < tq; i++) for (let j = 0; j < tk; j++) add(i, j, M[i * tk + j]); }
    ctx.strokeStyle = hd.color;
    for (let b = 0; b < LEVELS; b++) {
      if (!used[b]) continue;
      const level = (b + 0.5) / LEVELS;
      ctx.globalAlpha = h ? 0.2 + 0.8 * level : 0.08 + 0.5 * level;
      ctx.lineWidth = h ? 0.8 + 2.4 * level : 1;
      ctx.stroke(paths[b]);
    }
  }
  ctx.globalAlpha = 1;
  if (!h) return;
  const box = (x, i, w, alpha) => {
    ctx.globalAlpha = alpha; ctx.fillStyle = STYLE.accent;
    ctx.fillRect(x, lineY(g, i) - g.rowH / 2 + 1, w, g.rowH - 2);
  };
  ctx.save(); ctx.globalCompositeOperation = "multiply";
  const M = v.M;
  if (h.axis === "col") {
    box(g.textR - 3, h.k, g.rightW + 6, 1);
    for (let i = 0; i < tq; i++) box(g.textL - g.leftW - 3, i, g.leftW + 6, 0.85 * Math.sqrt(M[i * tk + h.k]));
  } else {
    box(g.textL - g.leftW - 3, h.q, g.leftW + 6, 1);
    for (let j = 0; j < tk; j++) box(g.textR - 3, j, g.rightW + 6, 0.85 * Math.sqrt(M[h.q * tk + j]));
  }
  ctx.restore();
}

function setHover(viewer, axis, q, k) {
  const h = viewer.state.hover;
  if (!axis && !h) return;
  if (h && axis === h.axis && q === h.q && k === h.k) return;
  viewer.hover(axis, q, k);
}

function attachHover(viewer) {
  viewer.heat.addEventListener("mousemove", (e) => {
    const g = viewer.heatGeom; if (!g) return;
    const r = viewer.heat.getBoundingClientRect(); const x = e.clientX - r.left; const y = e.clientY - r.top;
    const i = Math.floor((y - g.top) / g.cell); const j = Math.floor((x - g.left) / g.cell);
    const inI = i >= 0 && i < g.tq; const inJ = j >= 0 && j < g.tk;
    if (inI && inJ) setHover(viewer, "cell", i, j);
    else if (inI && x < g.left) setHover(viewer, "row", i, null);
    else if (inJ && y < g.top) setHover(viewer, "col", null, j);
    else setHover(viewer, null, null, null);
  });
  viewer.lines.addEventListener("mousemove", (e) => {
    const g = viewer.linesGeom; if (!g) return;
    const r = viewer.lines.getBoundingClientRect(); const x = e.clientX - r.left; const y = e.clientY - r.top;
    const i = Math.floor((y - 4) / g.rowH);
    if (x < (g.x0 + g.x1) / 2) setHover(viewer, i >= 0 && i < viewer.view.kind.tq ? "row" : null, i, null);
    else setHover(viewer, i >= 0 && i < viewer.view.kind.tk ? "col" : null, null, i);
  });
  for (const c of [viewer.heat, viewer.lines]) c.addEventListener("mouseleave", () => setHover(viewer, null, null, null));
}

Viewer.prototype.tokenPoint = function (panel, axis, index, index2) {
  // Client (viewport) coordinates of a token label or heatmap cell, e.g. for a test's mouse.
  if (panel === "heatmap") {
    const g = this.heatGeom; const r = this.heat.getBoundingClientRect();
    if (axis === "row") return { x: r.left + Math.max(2, g.left - 10), y: r.top + g.top + (index + 0.5) * g.cell };
    if (axis === "col") return { x: r.left + g.left + (index + 0.5) * g.cell, y: r.top + Math.max(2, g.top - 10) };
    return { x: r.left + g.left + (index2 + 0.5) * g.cell, y: r.top + g.top + (index + 0.5) * g.cell };
  }
  const g = this.linesGeom; const y = lineY(g, index); const sc = this.scroller;
  if (y < sc.scrollTop + 10 || y > sc.scrollTop + sc.clientHeight - 10) sc.scrollTop = Math.max(0, y - sc.clientHeight / 2);
  const r = this.lines.getBoundingClientRect();
  return { x: r.left + (axis === "row" ? g.textL - 8 : g.textR + 8), y: r.top + y };
};
"""
