// The teach station's regression and multi-label modes (teach.js calls these; classification needs none).
// Regression, as in road following: a click on the live view captures the frame with the clicked
// point as its XY target, normalised to [-1, 1] (centre 0, x right, y down) from where the click lies
// in the picture as displayed (scaled and letterboxed). Multi-label: toggle the labels shown, capture.
"use strict";

const TeachTasks = (() => {
  let task = "classification";
  let target = null;      // [x, y] of the last click
  let prediction = null;  // [x, y] of the served regression model, while it keeps coming
  const active = new Set();
  let lastThumbs = {};

  // Where a click lies in the picture drawn on `canvas`, normalised; null outside the picture.
  // The canvas keeps its aspect ratio (object-fit: contain), so its box may hold bars beside the picture.
  function clickToXY(canvas, clientX, clientY) {
    const r = canvas.getBoundingClientRect();
    const cs = getComputedStyle(canvas);
    const px = (name) => parseFloat(cs[name]) || 0;
    const left = r.left + px("borderLeftWidth") + px("paddingLeft");
    const top = r.top + px("borderTopWidth") + px("paddingTop");
    const boxW = r.width - px("borderLeftWidth") - px("borderRightWidth") - px("paddingLeft") - px("paddingRight");
    const boxH = r.height - px("borderTopWidth") - px("borderBottomWidth") - px("paddingTop") - px("paddingBottom");
    const scale = Math.min(boxW / canvas.width, boxH / canvas.height);
    const ix = (clientX - left - (boxW - canvas.width * scale) / 2) / scale;
    const iy = (clientY - top - (boxH - canvas.height * scale) / 2) / scale;
    if (!(ix >= 0 && iy >= 0 && ix <= canvas.width && iy <= canvas.height)) return null;
    return [2 * (ix / canvas.width) - 1, 2 * (iy / canvas.height) - 1];
  }

  function onViewClick(canvas, ev) {
    if (task !== "regression") return;
    if (!window.teachStats || !window.teachStats.drawn) { showMessage(false, "no picture yet: wait for the camera"); return; }
    const xy = clickToXY(canvas, ev.clientX, ev.clientY);
    if (!xy) { showMessage(false, "click inside the picture, not on the bars beside it"); return; }
    target = xy;
    $("xy-readout").textContent = `target x ${xy[0].toFixed(3)}, y ${xy[1].toFixed(3)}: capturing…`;
    post("/api/capture", { xy }).then((answer) => {
      $("xy-readout").textContent = `target x ${xy[0].toFixed(3)}, y ${xy[1].toFixed(3)}` + (answer.ok ? ": saved" : ": not saved");
    });
  }

  function dot(g, xy, w, h, colour, filled) {
    const x = ((xy[0] + 1) / 2) * w, y = ((xy[1] + 1) / 2) * h, r = Math.max(5, w / 60);
    g.save();
    g.lineWidth = Math.max(2, w / 240); g.strokeStyle = colour; g.fillStyle = colour;
    g.beginPath(); g.arc(x, y, r, 0, 2 * Math.PI);
    filled ? g.fill() : g.stroke();
    g.beginPath(); g.moveTo(x - 2 * r, y); g.lineTo(x + 2 * r, y); g.moveTo(x, y - 2 * r); g.lineTo(x, y + 2 * r); g.stroke();
    g.restore();
  }

  // After each frame is drawn: the last target (green ring) and the model's point (magenta dot).
  function draw(g, w, h) {
    if (task !== "regression") return;
    if (target) dot(g, target, w, h, "#00e676", false);
    if (prediction) dot(g, prediction, w, h, "#ff1aff", true);
  }

  function panel() {
    const box = $("task-panel");
    if (box.dataset.task === task) return box;
    box.dataset.task = task;
    box.replaceChildren();
    if (task === "regression") {
      box.append(
        el("p", { class: "hint" }, "Click the live view where the target is (e.g. where the robot should drive): the frame is saved with that point."),
        el("div", { id: "xy-readout" }, "no target yet"),
        el("div", { id: "images-count" }, ""),
      );
    } else if (task === "multilabel") {
      const capture = el("button", { id: "capture-labels", class: "capture" }, "Capture");
      capture.addEventListener("click", () => post("/api/capture", { labels: [...active].sort() }));
      box.append(
        el("p", { class: "hint" }, "Switch on every label the camera shows now (none for an image of none of them), then Capture."),
        el("div", { id: "label-toggles", class: "row" }),
        el("div", { class: "row" }, ""),
        el("div", { id: "images-count" }, ""),
      );
      box.children[2].append(capture, el("span", { id: "active-labels" }, ""));
    }
    box.append(el("div", { id: "task-thumbs", class: "thumbs task-thumbs" }));
    return box;
  }

  function renderActive() {
    const shown = [...active].sort();
    const text = shown.length ? shown.join(", ") : "none of the labels";
    $("active-labels").textContent = `with: ${text}`;
  }

  // The state changed: show the task and its panel (classification keeps teach.js's class rows).
  function render(s) {
    task = s.task_type || "classification";
    $("task").textContent = `task: ${task}`;
    $("task").dataset.task = task;
    const classic = task === "classification";
    $("classes").hidden = !classic;
    $("add-class").querySelector("input").hidden = task === "regression";
    $("add-class").querySelector("button[type=submit]").hidden = task === "regression";
    $("add-class").querySelector("input").placeholder = task === "multilabel" ? "new label, e.g. cup" : "new class name, e.g. free";
    $("add-class").querySelector("button[type=submit]").textContent = task === "multilabel" ? "Add label" : "Add class";
    $("classes-title").textContent = classic ? "Classes" : task === "multilabel" ? "Labels" : "XY targets";
    $("classes-hint").hidden = !classic;
    $("view").classList.toggle("clickable", task === "regression");
    const box = $("task-panel");
    box.hidden = classic;
    if (classic) return;
    panel();
    $("images-count").textContent = `${s.images} image${s.images === 1 ? "" : "s"} in the dataset`;
    if (task === "multilabel") {
      const toggles = $("label-toggles");
      const names = s.classes.map((c) => c.name);
      [...active].forEach((n) => { if (!names.includes(n)) active.delete(n); });
      toggles.replaceChildren(...s.classes.map((c) => {
        const on = active.has(c.name);
        const b = el("button", { class: "label-toggle" + (on ? " on" : ""), "data-label": c.name, "aria-pressed": String(on) },
          `${c.name} (${c.count})`);
        b.addEventListener("click", () => { on ? active.delete(c.name) : active.add(c.name); render(s); });
        return b;
      }));
      renderActive();
    }
    thumbs(lastThumbs);
  }

  function thumbs(all) {
    lastThumbs = all;
    if (task === "classification" || !$("task-thumbs")) return;
    const list = all[task === "regression" ? "xy" : "multilabel"] || [];
    $("task-thumbs").replaceChildren(...list.map((t) => {
      const box = el("div", { class: "tthumb" });
      box.append(el("img", { src: t.src, alt: t.xy ? `target ${t.xy}` : `labels ${t.labels}` }));
      if (t.xy) {
        const d = el("span", { class: "tdot" });
        d.style.left = `${((t.xy[0] + 1) / 2) * 100}%`; d.style.top = `${((t.xy[1] + 1) / 2) * 100}%`;
        box.append(d);
        box.title = `x ${t.xy[0].toFixed(3)}, y ${t.xy[1].toFixed(3)}`;
      }
      if (t.labels) box.append(el("span", { class: "tlabels" }, t.labels.length ? t.labels.join(", ") : "none"));
      return box;
    }));
  }

  // The classifier's latest result; true when it was a regression or multi-label one (shown here).
  function live(msg) {
    prediction = msg.xy || null;
    if (msg.xy) {
      $("live-label").textContent = `x ${msg.xy[0].toFixed(2)}, y ${msg.xy[1].toFixed(2)}`;
      $("live-score").textContent = "";
      return true;
    }
    if (msg.labels) {
      $("live-label").textContent = msg.labels.length ? msg.labels.join(", ") : "none";
      $("live-score").textContent = msg.labels.map((n) => `${n} ${Math.round(100 * msg.scores[n])}%`).join(" ");
      return true;
    }
    return false;
  }

  return { clickToXY, onViewClick, draw, render, thumbs, live, get target() { return target; } };
})();
window.TeachTasks = TeachTasks;
