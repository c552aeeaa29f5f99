// vdis's page: picks clips, calls the HTTP API (/swap, /generate, /encode, /decode) and shows
// the results looping. Plain JS, no libraries, same origin as the API.
"use strict";

const SCALE = 4;  // results are upscaled by the service (nearest neighbour) to stay crisp
const GRID_CONCURRENCY = 4;  // /decode calls in flight at once while building the grid

const $ = (id) => document.getElementById(id);
const slots = { a: null, b: null };  // each: {name, blob}
let samples = [];  // [{file, label, blob?}]
let model = null;  // GET /model

// ---------------------------------------------------------------------------------------------
// Talking to the API

// `problem`: the problem+json answer, when there was one (its `field` names a refused upload).
class ApiError extends Error {
  constructor(message, problem = null) { super(message); this.problem = problem; }
}

// Words a person can act on, from a problem+json answer (or from no answer at all).
async function explain(response, problem) {
  const hints = {
    413: "Try a shorter or smaller video.",
    415: "Upload a video file (MP4, WebM, GIF, ...).",
    503: "The service is busy or starting; try again in a moment.",
    504: "The service took too long; try again.",
  };
  const hint = hints[response.status] ? " " + hints[response.status] : "";
  if (problem && problem.title) {
    const detail = problem.detail ? `: ${problem.detail}` : "";
    return `${problem.title}${detail}.${hint}`;
  }
  return `The service answered ${response.status} ${response.statusText}.${hint}`;
}

async function call(path, options = {}) {
  let response;
  try {
    response = options.onUpload ? await send(path, options) : await fetch(path, options);
  } catch (error) {
    throw new ApiError("The service cannot be reached: is it still running? (" + error.message + ")");
  }
  if (!response.ok) {
    let problem = null;
    try { problem = await response.clone().json(); } catch { /* not JSON: a proxy's page, say */ }
    throw new ApiError(await explain(response, problem), problem);
  }
  return response;
}

// fetch() cannot report an upload's progress; XMLHttpRequest can. Same Response as fetch gives.
function send(path, { method = "POST", body, onUpload }) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path);
    xhr.responseType = "blob";
    xhr.upload.onprogress = (event) => onUpload(event.loaded, event.total);
    xhr.upload.onload = () => onUpload(Infinity, Infinity);  // all sent: the service works
    xhr.onload = () => {
      const headers = new Headers();
      for (const line of xhr.getAllResponseHeaders().trim().split(/\r?\n/)) {
        const at = line.indexOf(":");
        if (at > 0) headers.append(line.slice(0, at).trim(), line.slice(at + 1).trim());
      }
      resolve(new Response(xhr.response, { status: xhr.status, statusText: xhr.statusText, headers }));
    };
    xhr.onerror = () => reject(new Error("the connection failed"));
    xhr.send(body);
  });
}

function kilobytes(bytes) {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} KB`;
}

// Upload progress of several requests sent together, summed over their files, shown on `task`.
function uploads(task, bodies) {
  const sizes = bodies.map((body) => [...body.values()].reduce((n, v) => n + (v.size || 0), 0));
  const total = sizes.reduce((a, b) => a + b, 0);
  const sent = sizes.map(() => 0);
  task.uploading(0, total);
  return bodies.map((_, i) => (loaded, size) => {
    sent[i] = loaded === Infinity ? sizes[i] : sizes[i] * Math.min(1, loaded / (size || 1));
    task.uploading(sent.reduce((a, b) => a + b, 0), total);
  });
}

function form(fields) {
  const body = new FormData();
  for (const [name, clip] of Object.entries(fields)) body.append(name, clip.blob, clip.name);
  return body;
}

async function videoUrl(response) {
  return URL.createObjectURL(await response.blob());
}

// ---------------------------------------------------------------------------------------------
// Progress and errors, one status line per section

function busy(statusId, what) {
  const status = $(statusId);
  const started = performance.now();
  status.innerHTML = "";
  const line = document.createElement("span");
  line.className = "busy";
  status.append(line);
  const bar = document.createElement("progress");
  let phase = what;  // "Uploading 12.0 of 36.5 KB…" while the files go up, then `what`
  const tick = () => {
    line.textContent = `${phase} ${((performance.now() - started) / 1000).toFixed(1)} s`;
  };
  tick();
  const timer = setInterval(tick, 100);
  return {
    uploading(sent, total) {
      phase = sent < total ? `Uploading ${kilobytes(sent)} of ${kilobytes(total)}…` : what;
      tick();
    },
    progress(done, total) {
      bar.max = total; bar.value = done;
      if (!bar.isConnected) status.append(bar);
    },
    done(message = "") {
      clearInterval(timer);
      status.textContent = message;
    },
    fail(error) {
      clearInterval(timer);
      status.innerHTML = "";
      const box = document.createElement("div");
      box.className = "error";
      box.setAttribute("role", "alert");
      box.textContent = error instanceof ApiError ? error.message
        : "Something went wrong in the page: " + error;
      status.append(box);
    },
  };
}

async function withStatus(statusId, what, work, buttons) {
  const task = busy(statusId, what);
  buttons.forEach((b) => { b.disabled = true; });
  try {
    task.done(await work(task));
  } catch (error) {
    task.fail(error);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    updateButtons();
  }
}

function show(video, url) {
  if (video.src.startsWith("blob:")) URL.revokeObjectURL(video.src);
  video.src = url;
  video.hidden = false;
  video.play().catch(() => { /* autoplay refused: the controls-free loop waits for a click */ });
}

// ---------------------------------------------------------------------------------------------
// Clips: files, drops and samples

function setSlot(slot, clip) {
  slots[slot] = clip;
  refuse(slot, null);
  const video = $(`original-${slot}`);
  const drop = video.closest(".drop");
  drop.querySelector(".no-preview").hidden = true;
  show(video, URL.createObjectURL(clip.blob));
  drop.classList.add("filled");
  video.title = clip.name;
  fillSources();
  updateButtons();
}

// A file the browser cannot play: its name and why, not a black box.
function noPreview(slot) {
  const video = $(`original-${slot}`);
  const text = video.closest(".drop").querySelector(".no-preview");
  video.hidden = true;
  text.textContent = `${slots[slot] ? slots[slot].name : "This file"}: the browser cannot ` +
    "preview it (the service may still read it)";
  text.hidden = false;
}

// Mark a slot's upload as refused by the service (message), or clear the mark (null).
function refuse(slot, message) {
  const figure = document.querySelector(`.slot[data-slot="${slot}"]`);
  const box = figure.querySelector(".slot-error");
  figure.classList.toggle("refused", Boolean(message));
  box.textContent = message || "";
  box.hidden = !message;
}

function fit() {
  return $("fit").value;
}

async function sampleClip(sample) {
  if (!sample.blob) {
    const response = await call(`/static/samples/${sample.file}`);
    sample.blob = await response.blob();
  }
  return { name: sample.file, blob: sample.blob };
}

function clipsAvailable() {
  const clips = samples.map((s) => ({ id: "sample:" + s.file, label: s.label, get: () => sampleClip(s) }));
  for (const slot of ["b", "a"]) {  // unshifted: A first, then B, then the samples
    if (slots[slot]) {
      const clip = slots[slot];
      clips.unshift({ id: "slot:" + slot, label: `Video ${slot.toUpperCase()} (${clip.name})`,
                      get: async () => clip });
    }
  }
  return clips;
}

function fillSources() {
  const select = $("generate-source");
  const chosen = select.value;
  select.innerHTML = "";
  for (const clip of clipsAvailable()) select.add(new Option(clip.label, clip.id));
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;

  const fieldset = $("grid-clips");
  const checked = new Set([...fieldset.querySelectorAll("input:checked")].map((i) => i.value));
  const fresh = fieldset.querySelectorAll("input").length === 0;
  fieldset.querySelectorAll("label").forEach((l) => l.remove());
  for (const clip of clipsAvailable()) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.value = clip.id;
    box.checked = fresh ? clip.id.startsWith("sample:") : checked.has(clip.id);
    label.append(box, " " + clip.label);
    fieldset.append(label);
  }
}

function wireSlot(slot) {
  const figure = document.querySelector(`.slot[data-slot="${slot}"]`);
  figure.append($("slot-template").content.cloneNode(true));
  figure.querySelector("figcaption").textContent = `Video ${slot.toUpperCase()}`;
  figure.querySelector("video").id = `original-${slot}`;
  figure.querySelector("video").addEventListener("error", () => noPreview(slot));
  figure.querySelector(".drop").htmlFor = `file-${slot}`;
  figure.querySelector(".samples").dataset.slot = slot;
  const input = figure.querySelector("input");
  input.id = `file-${slot}`;
  const drop = input.closest(".drop");
  input.addEventListener("change", () => {
    if (input.files.length) setSlot(slot, { name: input.files[0].name, blob: input.files[0] });
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) setSlot(slot, { name: file.name, blob: file });
  });
}

function updateButtons() {
  $("swap-button").disabled = !(slots.a && slots.b);
}

// ---------------------------------------------------------------------------------------------
// The three panels

function clearResults() {
  for (const id of ["result-ab", "result-ba"]) {
    const video = $(id);
    if (video.src.startsWith("blob:")) URL.revokeObjectURL(video.src);
    video.removeAttribute("src");
    video.load();
    video.hidden = true;
  }
}

async function swap() {
  clearResults();  // a failed swap must not leave the last one's results beside its error
  refuse("a", null);
  refuse("b", null);
  await withStatus("swap-status", "Swapping…", async (task) => {
    const query = `?format=mp4&scale=${SCALE}&fit=${fit()}`;
    // Two requests side by side (not both=true) so each result is its own video; `roles` says
    // which slot each form field came from, to point at the upload the service refused.
    const requests = [{ appearance: "a", motion: "b" }, { appearance: "b", motion: "a" }];
    const bodies = requests.map((r) => form({ appearance: slots[r.appearance], motion: slots[r.motion] }));
    const progress = uploads(task, bodies);
    let results;
    try {
      results = await Promise.all(bodies.map((body, i) => call("/swap" + query,
        { method: "POST", body, onUpload: progress[i] }).catch((error) => {
        const field = error.problem && error.problem.field;
        if (field) error.slot = requests[i][field];
        throw error;
      })));
    } catch (error) {
      if (error.slot) {
        const clip = slots[error.slot];
        error.message = `Video ${error.slot.toUpperCase()} (${clip.name}) was refused. ` +
          error.message;
        refuse(error.slot, `Refused: ${error.problem.detail}`);
      }
      throw error;
    }
    show($("result-ab"), await videoUrl(results[0]));
    show($("result-ba"), await videoUrl(results[1]));
    return "";
  }, [$("swap-button")]);
}

async function generate() {
  await withStatus("generate-status", "Generating…", async (task) => {
    const source = clipsAvailable().find((c) => c.id === $("generate-source").value);
    if (!source) throw new ApiError("Pick a clip for the appearance first.");
    const n = Number($("generate-n").value) || 4;
    const seed = $("generate-seed").value;
    const query = new URLSearchParams({ n, format: "mp4", scale: SCALE, fit: fit() });
    if (seed !== "") query.set("seed", seed);
    const body = form({ video: await source.get() });
    const response = await call("/generate?" + query,
                                { method: "POST", body, onUpload: uploads(task, [body])[0] });
    const grid = response.headers.get("X-Vdis-Grid") || "";
    const usedSeed = response.headers.get("X-Vdis-Seed");
    show($("generated"), await videoUrl(response));
    $("generated-caption").textContent =
      `${n} motions for the appearance of ${source.label}` +
      (grid ? `, tiled ${grid.replace("x", " × ")}` : "") + ` (seed ${usedSeed})`;
    return "";
  }, [$("generate-button")]);
}

async function grid() {
  await withStatus("grid-status", "Encoding the clips…", async (task) => {
    const ids = new Set([...$("grid-clips").querySelectorAll("input:checked")].map((i) => i.value));
    const chosen = clipsAvailable().filter((c) => ids.has(c.id));
    if (chosen.length < 2) throw new ApiError("Tick at least two clips for the grid.");
    const clips = await Promise.all(chosen.map(async (c) => ({ ...c, clip: await c.get() })));
    const codes = await Promise.all(clips.map(async (c) => {
      const response = await call(`/encode?fit=${fit()}`, { method: "POST", body: form({ video: c.clip }) });
      return response.json();
    }));

    const n = clips.length;
    const cells = [];  // [row, column]: appearance of row, motion of column
    for (let row = 0; row < n; row++) for (let col = 0; col < n; col++) cells.push([row, col]);
    const urls = {};
    let done = 0;
    task.progress(0, cells.length);
    const decodeCell = async ([row, col]) => {
      const body = JSON.stringify({ model: codes[row].model, appearance: codes[row].appearance,
                                    motion: codes[col].motion });
      const response = await call(`/decode?format=mp4&scale=${SCALE}`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body });
      urls[`${row},${col}`] = await videoUrl(response);
      task.progress(++done, cells.length);
    };
    const queue = cells.slice();
    await Promise.all(Array.from({ length: GRID_CONCURRENCY }, async () => {
      while (queue.length) await decodeCell(queue.shift());
    }));

    const table = $("grid");
    table.querySelectorAll("video").forEach((v) => { if (v.src.startsWith("blob:")) URL.revokeObjectURL(v.src); });
    table.innerHTML = "";
    const head = table.insertRow();
    head.innerHTML = '<th class="corner">appearance ↓<br>motion →</th>';
    const clipVideo = (blob) => {
      const video = document.createElement("video");
      Object.assign(video, { muted: true, loop: true, autoplay: true, playsInline: true });
      video.src = URL.createObjectURL(blob);
      return video;
    };
    for (const c of clips) {
      const th = document.createElement("th");
      th.append(clipVideo(c.clip.blob), document.createElement("br"), c.label);
      head.append(th);
    }
    for (let row = 0; row < n; row++) {
      const tr = table.insertRow();
      const th = document.createElement("th");
      th.append(clipVideo(clips[row].clip.blob), document.createElement("br"), clips[row].label);
      tr.append(th);
      for (let col = 0; col < n; col++) {
        const video = document.createElement("video");
        Object.assign(video, { muted: true, loop: true, autoplay: true, playsInline: true });
        video.src = urls[`${row},${col}`];
        video.title = `appearance of ${clips[row].label}, motion of ${clips[col].label}`;
        tr.insertCell().append(video);
      }
    }
    return `${n} × ${n} grid: ${n * n} videos decoded.`;
  }, [$("grid-button")]);
}

// ---------------------------------------------------------------------------------------------
// Start

async function start() {
  wireSlot("a");
  wireSlot("b");
  $("swap-button").addEventListener("click", swap);
  $("generate-button").addEventListener("click", generate);
  $("grid-button").addEventListener("click", grid);
  $("fit").addEventListener("change", () => { document.body.dataset.fit = fit(); });
  document.body.dataset.fit = fit();
  try {
    model = await (await call("/model")).json();
    $("model-info").textContent =
      `Model ${model.name}: ${model.frame_size}×${model.frame_size} frames, ` +
      `${model.seq_len} per clip, appearance code of ${model.appearance_dim} numbers, ` +
      `motion code of ${model.motion_dim} per frame.`;
    document.querySelectorAll(".seq-len").forEach((e) => { e.textContent = model.seq_len; });
    document.querySelectorAll(".frame-size").forEach((e) => { e.textContent = model.frame_size; });
    $("generate-n").max = 16;
  } catch (error) {
    $("model-info").textContent = error.message;
    $("model-info").className = "status error";
  }
  try {
    samples = await (await call("/static/samples/index.json")).json();
  } catch {
    samples = [];  // the page works without samples: pick files instead
  }
  for (const holder of document.querySelectorAll(".samples")) {
    const slot = holder.dataset.slot;
    samples.forEach((sample, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `Sample ${i + 1}`;
      button.title = sample.label;
      button.dataset.sample = sample.file;
      button.addEventListener("click", async () => {
        try {
          setSlot(slot, await sampleClip(sample));
        } catch (error) {
          busy("swap-status", "").fail(error);
        }
      });
      holder.append(button);
    });
  }
  fillSources();
  updateButtons();
}

start();
