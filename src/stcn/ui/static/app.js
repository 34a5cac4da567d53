// stcn ui: the page. The server keeps all state (stcn.ui.state.UIState); this file draws frames and
// label maps, turns pointer input into point lists in image coordinates (true size) and sends them.
// Strokes are rasterised by the server with the same rules as the Python API.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  info: null, frame: 0, object: 1, tool: "scribble", background: false, zoom: 1, opacity: 0.5,
  labels: null, labelsFor: null, inFlight: 0, queue: Promise.resolve(), overlayOn: true,
};
window.stcnUI = ui; // for the browser tests and the console

// ---- server calls -------------------------------------------------------------------------------------
function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function call(path, body, contentType = "application/json") {
  const init = { method: "POST", headers: { "Content-Type": contentType } };
  init.body = contentType === "application/json" ? JSON.stringify(body || {}) : body;
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

// Requests run one after the other, in the order the user made them.
function serial(task) {
  ui.inFlight += 1;
  document.body.dataset.inflight = ui.inFlight;
  ui.queue = ui.queue.then(task).catch((err) => setStatus(err.message, true)).finally(() => {
    ui.inFlight -= 1;
    document.body.dataset.inflight = ui.inFlight;
  });
  return ui.queue;
}

async function refreshInfo(info) {
  ui.info = info || await (await fetch("/api/info")).json();
  const i = ui.info;
  $("undo").disabled = !i.can_undo;
  $("redo").disabled = !i.can_redo;
  const running = i.job.state === "running";
  $("cancel").disabled = !running;
  $("propagate").disabled = running;
  document.body.dataset.version = i.version;
  document.body.dataset.job = i.job.state;
  renderObjects();
  await showLabels();
}

// ---- drawing ----------------------------------------------------------------------------------------
function colourOf(id) {
  const obj = ui.info.objects.find((o) => o.id === id);
  const rgb = ui.info.palette[obj ? obj.colour % ui.info.palette.length : 0];
  return rgb;
}

async function showLabels() {
  const i = ui.info, t = ui.frame;
  const key = `${t}@${i.version}`;
  if (ui.labelsFor !== key) {
    const response = await fetch(`/api/labels/${t}?v=${i.version}`);
    ui.labels = new Uint8Array(await response.arrayBuffer());
    ui.labelsFor = key;
  }
  drawOverlay();
  drawStrokes();
  document.body.dataset.shown = key;
}

function drawOverlay() {
  const { width: w, height: h } = ui.info;
  const canvas = $("overlay");
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const alpha = ui.overlayOn ? Math.round(ui.opacity * 255) : 0;
  const colours = {};
  for (let p = 0; p < w * h; p++) {
    const id = ui.labels[p];
    if (id === 0) continue;
    const c = colours[id] || (colours[id] = colourOf(id));
    image.data.set([c[0], c[1], c[2], alpha], p * 4);
  }
  ctx.putImageData(image, 0, 0);
}

function strokeWidth() {
  return ui.tool === "brush" || ui.tool === "eraser" ? Number($("brush-size").value) : 3;
}

function drawPolyline(ctx, points, colour, width) {
  ctx.strokeStyle = `rgb(${colour.join(",")})`;
  ctx.fillStyle = ctx.strokeStyle;
  ctx.lineWidth = width;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  points.forEach(([x, y], n) => (n ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  if (points.length === 1) ctx.arc(points[0][0], points[0][1], width / 2, 0, 2 * Math.PI);
  ctx.stroke();
}

// The open scribble interaction's strokes (from the server) and the stroke being drawn.
function drawStrokes(current) {
  const ctx = $("strokes").getContext("2d");
  ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  const open = ui.info.open;
  if (open && open.frame === ui.frame) {
    for (const [id, points] of open.strokes) drawPolyline(ctx, points, id ? colourOf(id) : [255, 255, 255], 3);
  }
  if (current) drawPolyline(ctx, current.points, current.id ? colourOf(current.id) : [255, 255, 255], current.width);
}

function setFrame(t) {
  const n = ui.info.num_frames;
  ui.frame = Math.max(0, Math.min(n - 1, t));
  $("scrubber").value = ui.frame;
  $("counter").textContent = `${ui.frame + 1} / ${n}  (${ui.info.names[ui.frame]})`;
  $("frame").src = `/api/frames/${ui.frame}.jpg`;
  document.body.dataset.frame = ui.frame;
  return showLabels();
}

function setZoom(z) {
  ui.zoom = Math.max(0.1, Math.min(16, z));
  $("stage").style.width = `${ui.info.width * ui.zoom}px`;
  $("stage").style.height = `${ui.info.height * ui.zoom}px`;
  $("zoom-value").textContent = `${Math.round(ui.zoom * 100)}%`;
}

function zoomToFit() {
  const vp = $("viewport");
  setZoom(Math.min(vp.clientWidth / ui.info.width, vp.clientHeight / ui.info.height));
}

// ---- objects ------------------------------------------------------------------------------------------
function renderObjects() {
  const list = $("objects");
  const rows = ui.info.objects.map((o) => {
    const li = document.createElement("li");
    li.className = o.id === ui.object ? "selected" : "";
    li.dataset.id = o.id;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colourOf(o.id).join(",")})`;
    const name = document.createElement("input");
    name.type = "text";
    name.value = o.name;
    name.title = "rename";
    name.addEventListener("change", () => serial(async () => refreshInfo(await call(`/api/objects/${o.id}`, { name: name.value }))));
    const colour = document.createElement("select");
    colour.title = "colour (DAVIS palette)";
    for (let c = 1; c < Math.min(ui.info.palette.length, 21); c++) {
      const option = document.createElement("option");
      option.value = c;
      option.textContent = c;
      option.style.background = `rgb(${ui.info.palette[c].join(",")})`;
      option.selected = c === o.colour;
      colour.appendChild(option);
    }
    colour.addEventListener("change", () => serial(async () => refreshInfo(await call(`/api/objects/${o.id}`, { colour: Number(colour.value) }))));
    li.append(swatch, `${o.id}`, name, colour);
    li.addEventListener("click", (e) => { if (e.target === li || e.target === swatch) selectObject(o.id); });
    return li;
  });
  list.replaceChildren(...rows);
}

function selectObject(id) {
  if (!ui.info.objects.some((o) => o.id === id)) return;
  ui.object = id;
  renderObjects();
}

// ---- pointer input --------------------------------------------------------------------------------------
let drawing = null;

function imagePoint(e) {
  const rect = $("strokes").getBoundingClientRect();
  const { width: w, height: h } = ui.info;
  const x = ((e.clientX - rect.left) * w) / rect.width;
  const y = ((e.clientY - rect.top) * h) / rect.height;
  const clamp = (v, hi) => Math.round(Math.max(0, Math.min(hi, v)) * 100) / 100;
  return [clamp(x - 0.5, w - 1), clamp(y - 0.5, h - 1)]; // pixel centres are at integer coordinates
}

function pointerDown(e) {
  if (!ui.info || (e.button !== 0 && e.button !== 2)) return;
  e.preventDefault();
  const negative = ui.background || e.button === 2;
  const point = imagePoint(e);
  if (ui.tool === "click") {
    const body = { frame: ui.frame, point, object_id: ui.object, positive: !negative };
    serial(async () => refreshInfo(await call("/api/click", body)));
    return;
  }
  const id = ui.tool === "eraser" || negative ? 0 : ui.object;
  drawing = { id, points: [point], width: strokeWidth() };
  $("strokes").setPointerCapture(e.pointerId);
  drawStrokes(drawing);
}

function pointerMove(e) {
  if (!drawing) return;
  const p = imagePoint(e), last = drawing.points[drawing.points.length - 1];
  if (Math.hypot(p[0] - last[0], p[1] - last[1]) < 1) return;
  drawing.points.push(p);
  drawStrokes(drawing);
}

function pointerUp() {
  if (!drawing) return;
  const stroke = drawing;
  drawing = null;
  if (stroke.points.length === 1) stroke.points.push(stroke.points[0]); // a dot: one point drawn twice
  const frame = ui.frame;
  if (ui.tool === "scribble") {
    serial(async () => refreshInfo(await call("/api/scribble", { frame, strokes: [stroke.points], object_id: stroke.id })));
  } else {
    serial(async () => refreshInfo(await call("/api/brush", { frame, strokes: [stroke.points], object_id: stroke.id, size: stroke.width })));
  }
}

// ---- actions ----------------------------------------------------------------------------------------
const action = (path, message) => serial(async () => {
  await refreshInfo(await call(path));
  if (message) setStatus(message);
});

function propagate() {
  serial(async () => {
    const info = await call("/api/propagate", { frame: ui.info.pending.includes(ui.frame) ? ui.frame : null });
    $("progress").value = 0;
    setStatus(`propagating from frame ${info.job.frame}…`);
    await refreshInfo(info);
  });
}

function cancel() {
  serial(async () => { await call("/api/cancel"); });
}

function save() {
  serial(async () => {
    const out = await call("/api/save", { overlay: $("save-overlay").checked });
    setStatus(`saved ${out.count} masks to ${out.masks}` + (out.overlay ? ` and ${out.overlay}` : ""));
  });
}

function importMasks(files) {
  const names = ui.info.names;
  const stem = (name) => name.replace(/\.[^.]*$/, "");
  for (const file of files) {
    let t = names.indexOf(stem(file.name));
    if (t < 0 && files.length === 1) t = ui.frame;
    if (t < 0) {
      setStatus(`${file.name}: no frame has this name`, true);
      continue;
    }
    serial(async () => refreshInfo(await call(`/api/masks/${t}`, await file.arrayBuffer(), "image/png")));
  }
  serial(async () => setStatus(`imported ${files.length} mask(s)`));
}

function listen() {
  const events = new EventSource("/api/events");
  events.addEventListener("progress", (e) => {
    const job = JSON.parse(e.data);
    $("progress").max = Math.max(job.total, 1);
    $("progress").value = job.done;
    setStatus(`propagating from frame ${job.frame}: ${job.done} / ${job.total}`);
  });
  for (const kind of ["done", "cancelled", "error"]) {
    events.addEventListener(kind, (e) => {
      const job = JSON.parse(e.data);
      $("progress").value = kind === "done" ? $("progress").max : 0;
      serial(async () => {
        await refreshInfo();
        setStatus(job.message, kind === "error");
      });
    });
  }
}

// ---- what the loaded networks allow ------------------------------------------------------------------------
// Without S2M (the offline demo setup) scribble and click are greyed out and the note gives the one
// command that enables them; without FusionNet the note says propagation overwrites instead of fusing.
function available(tool) {
  return !ui.info || !ui.info.tools || ui.info.tools[tool] !== false;
}

function note(element, text, command) {
  const code = document.createElement("code");
  code.textContent = command;
  element.replaceChildren(text, code);
}

function showNetworks() {
  const i = ui.info;
  for (const radio of document.querySelectorAll("input[name=tool]")) {
    radio.disabled = !available(radio.value);
    radio.parentElement.classList.toggle("unavailable", radio.disabled);
    radio.parentElement.title = radio.disabled ? `needs the S2M network: ${i.enable.s2m}` : "";
  }
  // Commit closes a scribble (S2M) interaction: without S2M there is none to close
  $("commit").disabled = !available("commit");
  $("commit").title = $("commit").disabled ? `needs the S2M network: ${i.enable.s2m}` : "close the scribble interaction (Enter)";
  $("tools-note").hidden = available("scribble") && available("click");
  if (!$("tools-note").hidden) note($("tools-note"), "Scribble, click and commit need the S2M network. Enable them with ", i.enable.s2m);
  const model = i.networks.propagation === "demo" ? "the built-in demo model" : i.networks.propagation;
  if (i.fused) $("propagation-note").textContent = `Propagation: ${model}, fused with FusionNet.`;
  else note($("propagation-note"), `Propagation: ${model}, not fused (FusionNet is not loaded: a new result replaces the old one). Enable fusion with `, i.enable.fusion);
  if (!available(ui.tool)) setTool("brush");
}

// ---- keyboard -----------------------------------------------------------------------------------------
function setTool(tool) {
  if (!available(tool)) {
    setStatus(`${tool} needs the S2M network: run ${ui.info.enable.s2m} and restart stcn ui`, true);
    return;
  }
  ui.tool = tool;
  document.querySelector(`input[name=tool][value=${tool}]`).checked = true;
}

function keyDown(e) {
  if (e.target.tagName === "INPUT" && e.target.type === "text") return;
  const ctrl = e.ctrlKey || e.metaKey;
  const key = e.key;
  const handled = () => e.preventDefault();
  if (ctrl && key.toLowerCase() === "z" && !e.shiftKey) { handled(); action("/api/undo"); }
  else if (ctrl && (key.toLowerCase() === "y" || (key.toLowerCase() === "z" && e.shiftKey))) { handled(); action("/api/redo"); }
  else if (ctrl && key.toLowerCase() === "s") { handled(); save(); }
  else if (ctrl) return;
  else if (key === "ArrowLeft") { handled(); setFrame(ui.frame - 1); }
  else if (key === "ArrowRight") { handled(); setFrame(ui.frame + 1); }
  else if (/^[1-9]$/.test(key)) selectObject(Number(key));
  else if (key === "s" || key === "S") setTool("scribble");
  else if (key === "b" || key === "B") setTool("brush");
  else if (key === "c" || key === "C") setTool("click");
  else if (key === "e" || key === "E") setTool("eraser");
  else if (key === "x" || key === "X") { $("background").checked = ui.background = !ui.background; }
  else if (key === "[" || key === "]") {
    const size = $("brush-size");
    size.value = Number(size.value) + (key === "]" ? 2 : -2);
    $("brush-size-value").textContent = size.value;
  } else if (key === "Enter") { if (!$("commit").disabled) action("/api/commit", "interaction committed"); }
  else if (key === "p" || key === "P") propagate();
  else if (key === "Escape") { if (!$("help").hidden) $("help").hidden = true; else cancel(); }
  else if (key === "+" || key === "=") setZoom(ui.zoom * 1.25);
  else if (key === "-") setZoom(ui.zoom / 1.25);
  else if (key === "0") zoomToFit();
  else if (key === "o" || key === "O") { ui.overlayOn = !ui.overlayOn; drawOverlay(); }
  else if (key === "?") $("help").hidden = !$("help").hidden;
}

// ---- start --------------------------------------------------------------------------------------------
async function start() {
  await refreshInfo();
  const { width: w, height: h, num_frames: n, title } = ui.info;
  for (const id of ["overlay", "strokes"]) { $(id).width = w; $(id).height = h; }
  $("title").textContent = title || "stcn ui";
  showNetworks();
  $("scrubber").max = n - 1;
  zoomToFit();
  await setFrame(0);

  const strokes = $("strokes");
  strokes.addEventListener("pointerdown", pointerDown);
  strokes.addEventListener("pointermove", pointerMove);
  strokes.addEventListener("pointerup", pointerUp);
  strokes.addEventListener("pointercancel", pointerUp);
  strokes.addEventListener("contextmenu", (e) => e.preventDefault());
  $("viewport").addEventListener("wheel", (e) => {
    if (!e.ctrlKey) return;
    e.preventDefault();
    setZoom(ui.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1));
  }, { passive: false });
  $("scrubber").addEventListener("input", () => setFrame(Number($("scrubber").value)));
  $("prev").addEventListener("click", () => setFrame(ui.frame - 1));
  $("next").addEventListener("click", () => setFrame(ui.frame + 1));
  document.querySelectorAll("input[name=tool]").forEach((r) => r.addEventListener("change", () => { ui.tool = r.value; }));
  $("background").addEventListener("change", () => { ui.background = $("background").checked; });
  $("brush-size").addEventListener("input", () => { $("brush-size-value").textContent = $("brush-size").value; });
  $("opacity").addEventListener("input", () => { ui.opacity = Number($("opacity").value) / 100; drawOverlay(); });
  $("zoom-in").addEventListener("click", () => setZoom(ui.zoom * 1.25));
  $("zoom-out").addEventListener("click", () => setZoom(ui.zoom / 1.25));
  $("zoom-fit").addEventListener("click", zoomToFit);
  $("commit").addEventListener("click", () => action("/api/commit", "interaction committed"));
  $("undo").addEventListener("click", () => action("/api/undo"));
  $("redo").addEventListener("click", () => action("/api/redo"));
  $("propagate").addEventListener("click", propagate);
  $("cancel").addEventListener("click", cancel);
  $("save").addEventListener("click", save);
  $("add-object").addEventListener("click", () => serial(async () => {
    await refreshInfo(await call("/api/objects"));
    selectObject(ui.info.objects.length);
  }));
  $("import").addEventListener("change", (e) => { importMasks([...e.target.files]); e.target.value = ""; });
  $("help-toggle").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
  $("help-close").addEventListener("click", () => { $("help").hidden = true; });
  document.addEventListener("keydown", keyDown);
  listen();
  setStatus(available("scribble")
    ? "Draw on the frame: left = selected object, right (or X) = background. Press ? for shortcuts."
    : "Paint the objects with the brush (B; E erases), or import masks, then propagate (P). Press ? for shortcuts.");
  document.body.dataset.ready = "1";
}

start().catch((err) => setStatus(`could not start: ${err.message}`, true));
