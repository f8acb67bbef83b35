// vetseg review: the queue, a NiiVue viewer with the scan and its label, drawing tools, and
// Save, which posts the edited label to the server (a new corrected version, never an
// overwrite). No build step: a plain ES module beside NiiVue's pinned dist file.
import { MULTIPLANAR_TYPE, Niivue, SHOW_RENDER, SLICE_TYPE, cmapper } from "/static/vendor/niivue.js";

// Window presets (level, width) in HU.
const WINDOWS = { soft: [40, 400], lung: [-600, 1500], bone: [400, 1800] };
const LAYOUTS = {
  mpr: SLICE_TYPE.MULTIPLANAR,
  axial: SLICE_TYPE.AXIAL,
  coronal: SLICE_TYPE.CORONAL,
  sagittal: SLICE_TYPE.SAGITTAL,
  render: SLICE_TYPE.RENDER,
};
// A few undone states kept for redo; each is a full copy of the label volume (100 MB for a
// 512 x 512 x 400 scan), so the stack is bounded by bytes, not by steps.
const REDO_BYTES = 512 * 1024 * 1024;
const DRAFT_DELAY_MS = 1500;

const $ = (selector) => document.querySelector(selector);
const state = {
  workspace: "",
  organs: [],
  cases: [],
  window: [-1000, 1000],
  current: null, // {case, version, editable, overlay}
  organ: 1,
  tool: "brush",
  dirty: false,
  redo: [],
  savedThisSession: new Set(),
  timings: {}, // the last case opening (ms)
  lastSave: null, // the last save: total, browser export, server part (ms), bytes
  busy: false,
};

const nv = new Niivue({
  backColor: [0.09, 0.1, 0.11, 1],
  show3Dcrosshair: true,
  crosshairWidth: 0.5,
  crosshairColor: [1, 1, 0, 0.5],
  multiplanarShowRender: SHOW_RENDER.ALWAYS,
  isNearestInterpolation: true,
  dragAndDropEnabled: false,
});

function message(text, kind = "") {
  const el = $("#message");
  el.textContent = text;
  el.className = kind;
}

async function api(path, options = {}) {
  // The token travels in the same-site cookie the first page load set.
  const response = await fetch(path, { credentials: "same-origin", ...options });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return { status: response.status, ok: response.ok, body, headers: response.headers };
}

// ------------------------------------------------------------------ queue
async function loadQueue() {
  const { ok, body } = await api("/api/cases");
  if (!ok) {
    message(body?.detail ?? "the queue could not be loaded", "error");
    return;
  }
  state.workspace = body.workspace;
  state.organs = body.organs;
  state.cases = body.cases;
  state.window = body.window;
  $("#workspace-name").textContent =
    `${body.workspace} (${body.species}${body.synthetic ? ", synthetic data" : ""})`;
  const rows = body.cases.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.case = c.case;
    if (state.current?.case === c.case) tr.classList.add("current");
    if (state.savedThisSession.has(c.case)) tr.classList.add("done");
    const cells = [
      c.case,
      c.state_text,
      c.uncertainty === null ? "-" : c.uncertainty.toFixed(3),
      c.effort === null ? "-" : c.effort.toFixed(2),
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    tr.addEventListener("click", () => openCase(c.case));
    return tr;
  });
  $("#queue tbody").replaceChildren(...rows);
  renderOrgans();
}

function renderOrgans() {
  const rows = state.organs.map((organ, index) => {
    organ.visible ??= true;
    organ.opacity ??= 1;
    const tr = document.createElement("tr");
    tr.dataset.organ = organ.id;
    if (organ.id === state.organ) tr.classList.add("selected");
    const [r, g, b] = organ.colour;
    tr.innerHTML =
      `<td><input type="radio" name="organ" ${organ.id === state.organ ? "checked" : ""}` +
      ` title="draw this organ (${index + 1})"></td>` +
      `<td><span class="swatch" style="background:rgb(${r},${g},${b})"></span></td>` +
      `<td class="name"></td>` +
      `<td><input type="checkbox" class="visible" ${organ.visible ? "checked" : ""} title="show"></td>` +
      `<td><input type="range" class="organ-opacity" min="0" max="1" step="0.1" value="${organ.opacity}" title="opacity"></td>`;
    tr.querySelector(".name").textContent = organ.name;
    tr.querySelector("input[type=radio]").addEventListener("change", () => selectOrgan(organ.id));
    tr.querySelector(".visible").addEventListener("change", (e) => {
      organ.visible = e.target.checked;
      applyColours();
    });
    tr.querySelector(".organ-opacity").addEventListener("input", (e) => {
      organ.opacity = Number(e.target.value);
      applyColours();
    });
    return tr;
  });
  $("#organs tbody").replaceChildren(...rows);
}

function applyColours() {
  // One drawing colour table: label i is organ i; hidden organs get alpha 0.
  const table = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [""] };
  for (const organ of state.organs) {
    const [r, g, b] = organ.colour;
    table.R.push(r);
    table.G.push(g);
    table.B.push(b);
    table.A.push(organ.visible === false ? 0 : Math.round(255 * (organ.opacity ?? 1)));
    table.I.push(organ.id);
    table.labels.push(organ.name);
  }
  // nv.setDrawColormap(table) would do, but it re-uploads every volume texture
  // (updateGLVolume: seconds for a 512 x 512 x 100 scan without a GPU); the drawing's colours
  // are one row of the colour-map texture, which refreshColormaps rebuilds alone.
  nv.drawLut = cmapper.makeDrawLut(table);
  if (nv.gl && nv.volumes.length) nv.refreshColormaps();
  nv.setDrawOpacity(Number($("#opacity").value));
}

function windowRange(name) {
  if (name === null) return state.window; // not HU: the workspace's own window
  const [level, width] = WINDOWS[name];
  return [level - width / 2, level + width / 2];
}

function defaultWindow() {
  return state.window[0] === -1000 && state.window[1] === 1000 ? "soft" : null;
}

// ------------------------------------------------------------------ case
async function openCase(caseId) {
  if (state.busy) return;
  if (state.dirty && state.current && state.current.case !== caseId) {
    await storeDraft(); // switching cases keeps the unsaved edit for later
  }
  state.busy = true;
  const started = performance.now();
  message(`loading ${caseId} ...`);
  try {
    const { ok, body } = await api(`/api/cases/${encodeURIComponent(caseId)}`);
    if (!ok) throw new Error(body?.detail ?? `case ${caseId} could not be opened`);
    state.current = body;
    state.dirty = false;
    state.redo = [];
    $("#case-title").textContent = body.case;
    const overlay = { corrected: `version ${body.version}`, prelabel: "pre-label", label: "registered label", none: "no label yet" }[body.overlay];
    $("#case-state").textContent = `${body.state}; showing the ${overlay}` + (body.editable ? "" : " (read-only)");
    const base = `/api/cases/${encodeURIComponent(caseId)}`;
    // The window goes in with the scan: changing it later costs another texture upload.
    const windowName = defaultWindow();
    const [calMin, calMax] = windowRange(windowName);
    await nv.loadVolumes([
      { url: `${base}/scan.nii.gz`, colormap: "gray", cal_min: calMin, cal_max: calMax },
    ]);
    const volumesLoaded = performance.now();
    if (body.overlay === "none") {
      nv.createEmptyDrawing();
    } else {
      await nv.loadDrawingFromUrl(`${base}/label.nii.gz`);
    }
    const labelLoaded = performance.now();
    applyColours();
    markWindow(windowName);
    setTool(body.editable ? state.tool : "view");
    const styled = performance.now();
    await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
    const shown = performance.now();
    state.timings = {
      case: caseId,
      open_ms: shown - started,
      scan_ms: volumesLoaded - started,
      label_ms: labelLoaded - volumesLoaded,
      style_ms: styled - labelLoaded,
      frames_ms: shown - styled,
      since_navigation_ms: shown,
    };
    $("#save").disabled = !body.editable;
    message(`${caseId} shown in ${((shown - started) / 1000).toFixed(2)} s`);
    document.querySelectorAll("#queue tbody tr").forEach((tr) =>
      tr.classList.toggle("current", tr.dataset.case === caseId));
    history.replaceState(null, "", `#case=${encodeURIComponent(caseId)}`);
    await offerDraft();
  } catch (error) {
    message(String(error.message ?? error), "error");
  } finally {
    state.busy = false;
    document.body.dataset.loaded = state.current?.case ?? "";
  }
}

// ------------------------------------------------------------------ tools
function setTool(tool) {
  state.tool = tool === "view" && state.current?.editable ? "view" : tool;
  const drawing = state.current?.editable && tool !== "view";
  nv.setDrawingEnabled(Boolean(drawing));
  if (drawing) {
    const value = tool === "eraser" ? 0 : state.organ;
    nv.setPenValue(value, tool === "fill");
  }
  document.querySelectorAll("#tools button").forEach((b) =>
    b.classList.toggle("active", b.dataset.tool === tool));
}

function selectOrgan(id) {
  state.organ = id;
  document.querySelectorAll("#organs tbody tr").forEach((tr) => {
    const selected = Number(tr.dataset.organ) === id;
    tr.classList.toggle("selected", selected);
    tr.querySelector("input[type=radio]").checked = selected;
  });
  if (state.tool === "eraser" || state.tool === "view") setTool("brush");
  else setTool(state.tool);
}

function setPenSize(size) {
  const clamped = Math.max(1, Math.min(15, size));
  nv.opts.penSize = clamped;
  $("#pen-size").value = clamped;
  $("#pen-size-value").textContent = clamped;
}

function setWindow(name) {
  const volume = nv.volumes[0];
  if (!volume) return;
  [volume.cal_min, volume.cal_max] = windowRange(name);
  nv.updateGLVolume();
  markWindow(name);
}

function markWindow(name) {
  document.querySelectorAll("#windows button").forEach((b) =>
    b.classList.toggle("active", b.dataset.window === name));
}

function setLayout(name) {
  nv.setSliceType(LAYOUTS[name]);
  document.querySelectorAll("#layouts button").forEach((b) =>
    b.classList.toggle("active", b.dataset.layout === name));
}

function undo() {
  if (!nv.drawBitmap) return;
  const used = state.redo.reduce((n, b) => n + b.byteLength, 0);
  if (used + nv.drawBitmap.byteLength > REDO_BYTES) state.redo.shift();
  state.redo.push(nv.drawBitmap.slice());
  nv.drawUndo();
}

function redo() {
  const bitmap = state.redo.pop();
  if (!bitmap || !nv.drawBitmap || bitmap.length !== nv.drawBitmap.length) return;
  nv.drawBitmap.set(bitmap);
  nv.drawAddUndoBitmap();
  nv.refreshDrawing(true);
  markDirty();
}

// ------------------------------------------------------------------ drafts (IndexedDB)
// An unsaved edit is kept per workspace, case and the version it started from, so a closed
// tab or a refused save loses nothing; it is offered again when the case is opened.
function draftKey(current = state.current) {
  return `${state.workspace}|${current.case}|v${current.version}`;
}

function openDrafts() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open("vetseg-review", 1);
    request.onupgradeneeded = () => request.result.createObjectStore("drafts");
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function draftStore(mode, action) {
  const db = await openDrafts();
  return new Promise((resolve, reject) => {
    const tx = db.transaction("drafts", mode);
    const request = action(tx.objectStore("drafts"));
    tx.oncomplete = () => { db.close(); resolve(request?.result); };
    tx.onerror = () => { db.close(); reject(tx.error); };
  });
}

async function gzipBytes(bytes, direction) {
  const stream = new Blob([bytes]).stream().pipeThrough(
    direction === "compress" ? new CompressionStream("gzip") : new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

let draftTimer = null;
function markDirty() {
  if (!state.current?.editable) return;
  state.dirty = true;
  clearTimeout(draftTimer);
  draftTimer = setTimeout(storeDraft, DRAFT_DELAY_MS);
}

async function storeDraft() {
  clearTimeout(draftTimer);
  if (!state.dirty || !nv.drawBitmap || !state.current) return;
  const current = state.current;
  const bitmap = await gzipBytes(nv.drawBitmap, "compress");
  await draftStore("readwrite", (store) =>
    store.put({ saved: new Date().toISOString(), length: nv.drawBitmap.length, bitmap }, draftKey(current)));
}

function casePrefix(current) {
  return `${state.workspace}|${current.case}|v`;
}

async function deleteDraft(current) {
  // Every kept edit of the case: a save supersedes them all.
  clearTimeout(draftTimer);
  const prefix = casePrefix(current);
  await draftStore("readwrite", (store) =>
    store.delete(IDBKeyRange.bound(prefix, `${prefix}\uffff`)));
}

async function newestDraft(current) {
  const prefix = casePrefix(current);
  const range = IDBKeyRange.bound(prefix, `${prefix}\uffff`);
  const [keys, drafts] = await Promise.all([
    draftStore("readonly", (store) => store.getAllKeys(range)),
    draftStore("readonly", (store) => store.getAll(range)),
  ]);
  let newest = null;
  drafts.forEach((draft, i) => {
    draft.version = Number(keys[i].slice(prefix.length));
    if (draft.version <= current.version && (!newest || draft.saved > newest.saved)) newest = draft;
  });
  return newest;
}

async function offerDraft() {
  const current = state.current;
  const draft = current.editable ? await newestDraft(current) : null;
  const bar = $("#restore");
  if (!draft) {
    bar.hidden = true;
    return;
  }
  let text = `Unsaved changes to this case from ${new Date(draft.saved).toLocaleString()}`;
  if (draft.version < current.version) {
    // A refused (stale) save or an edit overtaken by another save: offered, with a warning.
    text += `, drawn on version ${draft.version}; version ${current.version} was saved since` +
      ` and restoring replaces it in the viewer (saving stores version ${current.version + 1})`;
  }
  $("#restore-text").textContent = `${text}, are kept in this browser.`;
  bar.hidden = false;
  $("#restore-yes").onclick = async () => {
    const bitmap = await gzipBytes(draft.bitmap, "decompress");
    if (bitmap.length !== nv.drawBitmap.length) {
      message("the kept drawing does not fit this scan; it was not restored", "error");
      return;
    }
    nv.drawBitmap.set(bitmap);
    nv.drawAddUndoBitmap();
    nv.refreshDrawing(true);
    bar.hidden = true;
    markDirty();
    message("unsaved changes restored");
  };
  $("#restore-no").onclick = async () => {
    await deleteDraft(current);
    bar.hidden = true;
  };
}

// ------------------------------------------------------------------ save
async function save() {
  const current = state.current;
  if (!current?.editable || state.busy || !nv.drawBitmap) return;
  state.busy = true;
  $("#save").disabled = true;
  message("saving ...");
  const started = performance.now();
  try {
    await storeDraft(); // kept until the server confirms
    // NiiVue writes the drawing back in the scan's own voxel order and header.
    const payload = await nv.volumes[0].saveToUint8Array("label.nii.gz", nv.drawBitmap);
    const url = `/api/cases/${encodeURIComponent(current.case)}/corrections?base_version=${current.version}`;
    const exported = performance.now();
    const { status, ok, body, headers } = await api(url, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: payload,
    });
    const server = /dur=([\d.]+)/.exec(headers.get("server-timing") ?? "");
    state.lastSave = {
      total_ms: performance.now() - started,
      export_ms: exported - started,
      server_ms: server ? Number(server[1]) : null,
      upload_bytes: payload.length,
    };
    if (!ok) {
      const detail = body?.detail ?? `the server answered ${status}`;
      message(status === 409 ? detail : `not saved: ${detail}`, "error");
      return;
    }
    await deleteDraft(current);
    state.dirty = false;
    state.savedThisSession.add(current.case);
    const effort = body.effort === null ? "" : `, effort ${body.effort.toFixed(3)}`;
    const what = body.new ? `saved as version ${body.version}${effort}` : `unchanged: same as version ${body.version}`;
    await loadQueue();
    const next = nextCase(current.case);
    state.busy = false; // openCase refuses to start while a save is busy
    if (next) await openCase(next);
    message(`${current.case} ${what}` + (next ? `; now ${next}` : ""), "ok");
    document.body.dataset.saved = `${current.case}:${body.version}`; // for tests: all done
  } catch (error) {
    message(`not saved: ${error.message ?? error}; the drawing is kept in this browser`, "error");
  } finally {
    state.busy = false;
    $("#save").disabled = !state.current?.editable;
  }
}

function nextCase(after) {
  const editable = state.cases.filter((c) => c.editable);
  const index = editable.findIndex((c) => c.case === after);
  const rest = [...editable.slice(index + 1), ...editable.slice(0, Math.max(index, 0))];
  return rest.find((c) => !state.savedThisSession.has(c.case))?.case ?? null;
}

// ------------------------------------------------------------------ wiring
function wire() {
  document.querySelectorAll("#tools button").forEach((b) =>
    b.addEventListener("click", () => setTool(b.dataset.tool)));
  document.querySelectorAll("#windows button").forEach((b) =>
    b.addEventListener("click", () => setWindow(b.dataset.window)));
  document.querySelectorAll("#layouts button").forEach((b) =>
    b.addEventListener("click", () => setLayout(b.dataset.layout)));
  $("#pen-size").addEventListener("input", (e) => setPenSize(Number(e.target.value)));
  $("#opacity").addEventListener("input", () => applyColours());
  $("#undo").addEventListener("click", undo);
  $("#redo").addEventListener("click", redo);
  $("#save").addEventListener("click", save);
  nv.onDrawingChanged = (action) => {
    if (action === "draw") state.redo = [];
    markDirty();
  };
  window.addEventListener("beforeunload", (event) => {
    if (state.dirty) {
      storeDraft();
      event.preventDefault();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement && event.target.type !== "range") return;
    const key = event.key.toLowerCase();
    if (event.ctrlKey || event.metaKey) {
      if (key === "z" && !event.shiftKey) undo();
      else if (key === "y" || (key === "z" && event.shiftKey)) redo();
      else if (key === "s") save();
      else return;
      event.preventDefault();
      return;
    }
    const tools = { b: "brush", e: "eraser", f: "fill", v: "view" };
    const windows = { t: "soft", l: "lung", o: "bone" };
    if (tools[key]) setTool(tools[key]);
    else if (windows[key]) setWindow(windows[key]);
    else if (key === "[") setPenSize(nv.opts.penSize - 1);
    else if (key === "]") setPenSize(nv.opts.penSize + 1);
    else if (key === "n" && state.current) {
      const next = nextCase(state.current.case);
      if (next) openCase(next);
    } else if (/^[1-9]$/.test(key) && Number(key) <= state.organs.length) selectOrgan(Number(key));
    else return;
    event.preventDefault();
  });
}

async function main() {
  await nv.attachTo("gl");
  nv.setMultiplanarLayout(MULTIPLANAR_TYPE.GRID); // 2 x 2: long bodies keep a usable axial tile
  setPenSize(3);
  wire();
  await loadQueue();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("case");
  const first = wanted ?? state.cases.find((c) => c.editable)?.case;
  if (first) await openCase(first);
}

// For the browser test and the benchmark: the viewer and the page's state.
window.vetsegReview = { nv, state, openCase, save, undo, redo, setTool, setLayout, selectOrgan };
main();
