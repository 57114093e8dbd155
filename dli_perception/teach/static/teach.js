// The teach station page: live view, classes, training, reaction, health.
// Plain browser JavaScript, no build step. Talks to the server only: GET /api/state, POST /api/*,
// and the WebSocket /ws (frames and state). Everything the page does goes to the robot's nodes
// through the server's graph client.
"use strict";

const $ = (id) => document.getElementById(id);
const view = $("view");
const viewCtx = view.getContext("2d");
let clientId = "";
let state = null;
let health = { nodes: [] };
let ws = null;

// Frame statistics, read by the latency benchmark and the browser test: for each frame drawn,
// its source stamp and when it was received and drawn (ms since the epoch, sub-millisecond).
const stats = { frames: [], received: 0, drawn: 0, max: 2000 };
window.teachStats = stats;
window.teachState = () => state;
const nowMs = () => performance.timeOrigin + performance.now();

// Regression and multi-label modes live in teach_tasks.js: a click on the view captures with an XY
// target (regression); the dots of targets and predictions are drawn over each frame.
view.addEventListener("click", (ev) => TeachTasks.onViewClick(view, ev));

function showMessage(ok, text) {
  const el = $("message");
  if (!text) { el.className = "message"; return; }
  el.textContent = text;
  el.className = "message shown " + (ok ? "ok" : "error");
}

async function post(path, body) {
  let answer;
  try {
    const res = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify(body || {}),
    });
    answer = await res.json().catch(() => ({ ok: res.ok, message: res.statusText }));
  } catch (err) {
    answer = { ok: false, message: "the teach station is not reachable: " + err };
  }
  showMessage(answer.ok, answer.message);
  return answer;
}

// -- WebSocket ----------------------------------------------------------------------------------
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const token = new URLSearchParams(location.search).get("token");
  ws = new WebSocket(`${scheme}://${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : ""));
  ws.binaryType = "arraybuffer";
  ws.onopen = () => setConnection(true);
  ws.onclose = () => { setConnection(false); setTimeout(connect, 1000); };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") onJson(JSON.parse(ev.data));
    else onFrame(ev.data);
  };
}

function setConnection(up) {
  const el = $("connection");
  el.textContent = up ? "connected" : "disconnected: retrying";
  el.className = "badge " + (up ? "ok" : "error");
}

function onJson(msg) {
  if (msg.type === "hello") clientId = msg.client_id;
  else if (msg.type === "state") { state = msg; renderState(); }
  else if (msg.type === "health") { health = msg; renderHealth(); }
  else if (msg.type === "live") renderLive(msg);
  else if (msg.type === "thumbs") renderThumbs(msg.thumbs);
}

async function onFrame(buffer) {
  const received = nowMs();
  const headerLen = new DataView(buffer).getUint32(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, headerLen)));
  const jpeg = new Blob([new Uint8Array(buffer, 4 + headerLen)], { type: "image/jpeg" });
  stats.received += 1;
  try {
    const bitmap = await createImageBitmap(jpeg);
    if (view.width !== bitmap.width || view.height !== bitmap.height) {
      view.width = bitmap.width; view.height = bitmap.height;
    }
    viewCtx.drawImage(bitmap, 0, 0);
    bitmap.close();
    TeachTasks.draw(viewCtx, view.width, view.height);
  } finally {
    ws.send(JSON.stringify({ type: "ack", seq: header.seq }));
  }
  const drawn = nowMs();
  stats.drawn += 1;
  stats.frames.push({
    seq: header.seq, stamp_ms: header.stamp_ns / 1e6, encoded_ms: header.encoded_ns / 1e6,
    sent_ms: header.sent_ns / 1e6, received, drawn, source: header.source,
  });
  if (stats.frames.length > stats.max) stats.frames.splice(0, stats.frames.length - stats.max);
  $("view-source").textContent = header.source === "overlay" ? "classifier overlay" : "camera";
  $("view-source").dataset.source = header.source;
}

setInterval(() => {  // fps and latency of the last two seconds, shown under the image
  const t = nowMs();
  const recent = stats.frames.filter((f) => t - f.drawn < 2000);
  if (!recent.length) { $("view-stats").textContent = ""; return; }
  const lat = recent.map((f) => f.drawn - f.stamp_ms).sort((a, b) => a - b);
  $("view-stats").textContent = `${(recent.length / 2).toFixed(1)} fps, ${lat[lat.length >> 1].toFixed(0)} ms behind`;
}, 500);

// -- rendering ----------------------------------------------------------------------------------
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => (k === "class" ? (e.className = v) : e.setAttribute(k, v)));
  if (text !== undefined) e.textContent = text;
  return e;
}

function nodeLevel(name) {
  const n = health.nodes.find((x) => x.name === name);
  return n ? n.level : "missing";
}

function renderState() {
  const s = state;
  TeachTasks.render(s);
  const box = $("classes");
  const seen = new Set();
  s.classes.forEach((c) => {
    seen.add(c.name);
    let row = box.querySelector(`[data-class="${CSS.escape(c.name)}"]`);
    if (!row) row = addClassRow(box, c.name);
    row.querySelector(".count").textContent = `${c.count} image${c.count === 1 ? "" : "s"}`;
    const rec = row.querySelector(".record");
    rec.classList.toggle("recording", s.recording === c.name);
    rec.textContent = s.recording === c.name ? "Recording…" : "Hold to record";
  });
  box.querySelectorAll("[data-class]").forEach((row) => { if (!seen.has(row.dataset.class)) row.remove(); });

  const t = s.training;
  const p = t.progress;
  const finished = !t.running && t.status && t.status.exported;
  $("progress-bar").style.width = `${Math.round(100 * (finished ? 1 : p ? p.fraction : 0))}%`;
  let text = "not trained yet";
  if (t.running && p) {
    text = `training: ${p.phase}, epoch ${p.epoch}/${p.epochs}` + (p.eta_s != null ? `, about ${Math.ceil(p.eta_s)} s left` : "");
  } else if (t.status) {
    const st = t.status;
    text = st.status === "failed" ? `training failed: ${st.error}` :
      `${st.status}: best validation accuracy ${pct(st.best_val_acc)} at epoch ${st.best_epoch} (${st.epochs_run} epochs, ${st.duration_s} s)` +
      (st.exported ? "" : ` — ${st.message}`);
  }
  $("progress-text").textContent = text;
  $("progress-text").dataset.done = t.status && !t.running ? t.status.status : "";
  $("train").disabled = t.running;
  $("cancel").disabled = !t.running;
  $("use-model").disabled = t.running || !(t.status && t.status.exported);
  drawCurves(t.curves);
  drawConfusion(!t.running && t.status && t.status.exported ? t.status : null);

  const r = s.reaction;
  $("reaction-state").textContent = r ? `reaction: ${r.enabled ? "enabled" : "disabled"}, ${r.reason}` +
    (r.label ? ` (${r.label})` : "") : "reaction: no state (is reaction_node running?)";
  if (s.message && s.message.text) showMessage(s.message.ok, s.message.text);
  buttonsForHealth();
}

function pct(x) { return x == null ? "?" : `${(100 * x).toFixed(0)}%`; }

function addClassRow(box, name) {
  const row = el("div", { class: "class", "data-class": name });
  const head = el("div", { class: "head" });
  head.append(el("span", { class: "name" }, name), el("span", { class: "count" }, ""));
  const capture = el("button", { class: "capture" }, "Capture");
  capture.addEventListener("click", () => post("/api/capture", { name }));
  const rec = el("button", { class: "record" }, "Hold to record");
  let held = false;  // released before the start request came back: the stop still goes out, after it
  const start = (ev) => {
    ev.preventDefault();
    if (ev.pointerId !== undefined && rec.setPointerCapture) rec.setPointerCapture(ev.pointerId);
    held = true;
    post("/api/record", { name, on: true, client: clientId });
  };
  const stop = () => { if (held) { held = false; post("/api/record", { name, on: false, client: clientId }); } };
  rec.addEventListener("pointerdown", start);
  rec.addEventListener("pointerup", stop);
  rec.addEventListener("pointercancel", stop);
  head.append(capture, rec);
  row.append(head, el("div", { class: "thumbs" }));
  box.append(row);
  return row;
}

function renderThumbs(thumbs) {
  document.querySelectorAll("#classes [data-class]").forEach((row) => {
    const strip = row.querySelector(".thumbs");
    strip.replaceChildren(...(thumbs[row.dataset.class] || []).map((t) => el("img", { src: t.src, alt: row.dataset.class })));
  });
  TeachTasks.thumbs(thumbs);
}

function renderLive(msg) {
  if (TeachTasks.live(msg)) return;
  $("live-label").textContent = msg.label == null ? "–" : msg.label;
  $("live-score").textContent = msg.label == null ? "" : `(${pct(msg.score)})`;
}

function renderHealth() {
  const list = $("health");
  list.replaceChildren(...health.nodes.map((n) => {
    const li = el("li", { "data-node": n.name });
    li.append(el("span", { class: "name" }, n.name), el("span", { class: `badge ${n.level}` }, n.level), el("span", {}, n.message));
    return li;
  }));
  buttonsForHealth();
}

function buttonsForHealth() {
  // A button whose node is not running says why in its tooltip; pressing it still shows the reason.
  const why = (node) => (["gone", "missing"].includes(nodeLevel(node)) ? `${node} is not running` : "");
  document.querySelectorAll(".capture, .record, #undo").forEach((b) => (b.title = why("recorder_node")));
  ["train", "cancel"].forEach((id) => ($(id).title = why("trainer_node")));
  $("use-model").title = why("classifier_node");
  ["react-enable", "react-disable"].forEach((id) => ($(id).title = why("reaction_node")));
}

// -- charts -------------------------------------------------------------------------------------
function drawCurves(points) {
  const c = $("curves"), g = c.getContext("2d"), W = c.width, H = c.height, pad = 30;
  g.clearRect(0, 0, W, H);
  g.strokeStyle = "#ccc"; g.strokeRect(pad, 8, W - 2 * pad, H - pad - 8);
  g.fillStyle = "#555"; g.font = "11px sans-serif";
  g.fillText("loss", 2, 16); g.fillText("acc", W - pad + 4, 16); g.fillText("epoch", W / 2 - 12, H - 4);
  if (!points || !points.length) return;
  const maxLoss = Math.max(1e-6, ...points.flatMap((p) => [p.loss, p.val_loss]).filter((v) => v != null));
  const n = Math.max(points[points.length - 1].epoch, 2);
  const x = (e) => pad + ((e - 1) / (n - 1)) * (W - 2 * pad);
  const series = [
    ["loss", "#1a73e8", (v) => v / maxLoss], ["val_loss", "#8ab4f8", (v) => v / maxLoss],
    ["accuracy", "#188038", (v) => v], ["val_accuracy", "#81c995", (v) => v],
  ];
  series.forEach(([key, colour, scale], i) => {
    g.strokeStyle = colour; g.lineWidth = 2; g.beginPath();
    let started = false;
    points.forEach((p) => {
      if (p[key] == null) return;
      const y = 8 + (1 - scale(p[key])) * (H - pad - 8);
      started ? g.lineTo(x(p.epoch), y) : g.moveTo(x(p.epoch), y);
      started = true;
    });
    g.stroke();
    g.fillStyle = colour; g.fillText(key, pad + 6 + i * 80, H - pad + 14);
  });
  g.fillStyle = "#555"; g.fillText(maxLoss.toFixed(2), 2, 28); g.fillText("1.0", W - pad + 4, 28);
}

function drawConfusion(status) {
  const c = $("confusion");
  if (!status || !status.confusion || !status.confusion.length) { c.hidden = true; $("result").textContent = ""; return; }
  c.hidden = false;
  const m = status.confusion, names = status.classes, k = names.length, g = c.getContext("2d");
  const left = 70, top = 20, cell = Math.min(60, (c.width - left) / k);
  g.clearRect(0, 0, c.width, c.height);
  g.font = "11px sans-serif"; g.fillStyle = "#555";
  g.fillText("true \\ predicted", 2, 12);
  const max = Math.max(1, ...m.flat());
  m.forEach((row, i) => {
    g.fillStyle = "#333"; g.fillText(names[i].slice(0, 10), 2, top + i * cell + cell / 2 + 4);
    row.forEach((v, j) => {
      const shade = Math.round(255 - (200 * v) / max);
      g.fillStyle = i === j ? `rgb(${shade},255,${shade})` : `rgb(255,${shade},${shade})`;
      g.fillRect(left + j * cell, top + i * cell, cell - 2, cell - 2);
      g.fillStyle = "#000"; g.fillText(String(v), left + j * cell + cell / 2 - 6, top + i * cell + cell / 2 + 4);
    });
  });
  names.forEach((n, j) => { g.fillStyle = "#333"; g.fillText(n.slice(0, 8), left + j * cell + 2, top + k * cell + 12); });
  $("result").textContent = "Confusion matrix of the validation images (rows: true class):";
}

// -- controls -----------------------------------------------------------------------------------
$("add-class").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const answer = await post("/api/classes", { name: $("class-name").value });
  if (answer.ok) $("class-name").value = "";
});
$("undo").addEventListener("click", () => post("/api/undo"));
$("train").addEventListener("click", () => post("/api/train"));
$("cancel").addEventListener("click", () => post("/api/cancel"));
$("use-model").addEventListener("click", () => post("/api/use_model"));
$("react-enable").addEventListener("click", () => post("/api/react", { enabled: true }));
$("react-disable").addEventListener("click", () => post("/api/react", { enabled: false }));
$("stop").addEventListener("click", () => post("/api/stop"));
document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") post("/api/stop"); });

fetch("/api/state", { credentials: "same-origin" }).then((r) => r.json()).then((s) => {
  if (!s.state) return;
  state = s.state; health = s.health; renderState(); renderHealth(); renderLive(s.live); renderThumbs(s.thumbs);
}).catch(() => {});
connect();
