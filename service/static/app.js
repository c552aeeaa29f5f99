// vdis's page: picks a model and clips, calls the HTTP API (/swap, /generate, /encode, /decode,
// each with model=NAME) and shows the results looping, each with the model's word on how far its
// uploads are from what it was trained on. Plain JS, no libraries, same origin as the API.
"use strict";

const SCALE = 4;  // results are upscaled by the service (nearest neighbour) to stay crisp
const GRID_CONCURRENCY = 4;  // /decode calls in flight at once while building the grid

const $ = (id) => document.getElementById(id);
const slots = { a: null, b: null };  // each: {name, blob}
let models = [];  // GET /models: [{name, default, domain, frame_size, seq_len, ..., samples}]
let model = null;  // the chosen one of `models`; null when /models failed (the default answers)
let samples = [];  // the chosen model's clips: [{file, url, label}]
const sampleBlobs = new Map();  // url -> Blob: switching back to a model downloads nothing again
let running = 0;  // tasks in flight: the model stays as it is until they are done

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

// "?name=value&...&model=NAME": every model request names the chosen model.
function query(params = {}) {
  const q = new URLSearchParams(params);
  if (model) q.set("model", model.name);
  return "?" + q;
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
  running++;
  $("model").disabled = true;  // the answer on its way is the chosen model's
  try {
    task.done(await work(task));
  } catch (error) {
    task.fail(error);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    $("model").disabled = --running > 0;
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
  if (!sampleBlobs.has(sample.url)) sampleBlobs.set(sample.url, await (await call(sample.url)).blob());
  return { name: sample.file, blob: sampleBlobs.get(sample.url) };
}

function clipsAvailable() {
  const clips = samples.map((s) => ({ id: "sample:" + s.url, label: s.label, get: () => sampleClip(s) }));
  for (const slot of ["b", "a"]) {  // unshifted: A first, then B, then the samples
    if (slots[slot]) {
      const clip = slots[slot];
      clips.unshift({ id: "slot:" + slot, label: `Video ${slot.toUpperCase()} (${clip.name})`,
                      get: async () => clip });
    }
  }
  return clips;
}

// The clips the generate and grid panels offer; `fresh`: tick the samples for the grid anew
// (another model's samples), else keep what the user ticked.
function fillSources(fresh = false) {
  const select = $("generate-source");
  const chosen = select.value;
  select.innerHTML = "";
  for (const clip of clipsAvailable()) select.add(new Option(clip.label, clip.id));
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;

  const fieldset = $("grid-clips");
  const checked = new Set([...fieldset.querySelectorAll("input:checked")].map((i) => i.value));
  fresh = fresh || fieldset.querySelectorAll("input").length === 0;
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
// The domain verdict: how far the uploads are from what the model was trained on

// From a model answer's headers: X-Vdis-Domain (in | out | unknown), X-Vdis-Domain-Score (a
// ratio: 1.0 is the edge of the model's training data) and, when out, X-Vdis-Warning (which
// upload, and what the model expects, in words). null from a service that says nothing of it.
function verdictOf(headers) {
  const verdict = headers.get("X-Vdis-Domain");
  if (!verdict) return null;
  return { verdict, score: headers.get("X-Vdis-Domain-Score"),
           warning: headers.get("X-Vdis-Warning") || "", model: headers.get("X-Vdis-Model") };
}

function scoreText(score) {
  const x = parseFloat(score);
  if (!Number.isFinite(x)) return "?";
  return x >= 10 ? x.toFixed(0) : x >= 1 ? x.toFixed(1) : x.toFixed(2);
}

// Fill `box` (a .domain element beside its result): out, a warning in words under a heading;
// unknown, a quiet line about `subject`; in (or no verdict), nothing. `text`: the words for an
// out verdict when not the service's own warning.
function showVerdict(box, verdict, subject = "the upload", text = null) {
  box.textContent = "";
  const state = verdict && ["out", "unknown"].includes(verdict.verdict) ? verdict.verdict : "";
  box.className = "domain" + (state ? " " + state : "");
  box.hidden = !state;
  const name = (verdict && verdict.model) || (model ? model.name : "the model");
  if (state === "out") {
    const heading = document.createElement("strong");
    heading.textContent = `Outside what ${name} knows.`;
    const expects = model ? ` It expects: ${model.domain}` : "";
    box.append(heading, " ", text || verdict.warning ||
      `The upload scores ${scoreText(verdict.score)}, where 1 is the edge of its training ` +
      `data: the answer shows what this model knows, not the upload.${expects}`);
  } else if (state === "unknown") {
    box.textContent = `${name} cannot measure the distance from ${subject} to its training ` +
      "data: it was exported without domain statistics.";
  }
}

function clearVerdict(box) {
  showVerdict(box, null);
}

// ---------------------------------------------------------------------------------------------
// The three panels

function forget(video) {
  if (video.src.startsWith("blob:")) URL.revokeObjectURL(video.src);
  video.removeAttribute("src");
  video.load();
  video.hidden = true;
}

function clearSwap() {
  for (const id of ["ab", "ba"]) {
    forget($(`result-${id}`));
    clearVerdict($(`domain-${id}`));
  }
}

// Every result and status on the page: what another model made is not this one's answer.
function clearAll() {
  clearSwap();
  forget($("generated"));
  $("generated-caption").textContent = "";
  clearVerdict($("domain-generated"));
  const table = $("grid");
  table.querySelectorAll("video").forEach((v) => { if (v.src.startsWith("blob:")) URL.revokeObjectURL(v.src); });
  table.innerHTML = "";
  clearVerdict($("domain-grid"));
  for (const id of ["swap-status", "generate-status", "grid-status"]) $(id).textContent = "";
}

async function swap() {
  clearSwap();  // a failed swap must not leave the last one's results beside its error
  refuse("a", null);
  refuse("b", null);
  await withStatus("swap-status", "Swapping…", async (task) => {
    const options = query({ format: "mp4", scale: SCALE, fit: fit() });
    // Two requests side by side (not both=true) so each result is its own video; `roles` says
    // which slot each form field came from, to point at the upload the service refused.
    const requests = [{ appearance: "a", motion: "b" }, { appearance: "b", motion: "a" }];
    const bodies = requests.map((r) => form({ appearance: slots[r.appearance], motion: slots[r.motion] }));
    const progress = uploads(task, bodies);
    let results;
    try {
      results = await Promise.all(bodies.map((body, i) => call("/swap" + options,
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
    ["ab", "ba"].forEach((id, i) => showVerdict($(`domain-${id}`), verdictOf(results[i].headers),
                                                "these uploads"));
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
    const options = { n, format: "mp4", scale: SCALE, fit: fit() };
    if (seed !== "") options.seed = seed;
    const body = form({ video: await source.get() });
    clearVerdict($("domain-generated"));
    const response = await call("/generate" + query(options),
                                { method: "POST", body, onUpload: uploads(task, [body])[0] });
    const grid = response.headers.get("X-Vdis-Grid") || "";
    const usedSeed = response.headers.get("X-Vdis-Seed");
    show($("generated"), await videoUrl(response));
    $("generated-caption").textContent =
      `${n} motions for the appearance of ${source.label}` +
      (grid ? `, tiled ${grid.replace("x", " × ")}` : "") + ` (seed ${usedSeed})`;
    showVerdict($("domain-generated"), verdictOf(response.headers), source.label);
    return "";
  }, [$("generate-button")]);
}

async function grid() {
  await withStatus("grid-status", "Encoding the clips…", async (task) => {
    const ids = new Set([...$("grid-clips").querySelectorAll("input:checked")].map((i) => i.value));
    const chosen = clipsAvailable().filter((c) => ids.has(c.id));
    if (chosen.length < 2) throw new ApiError("Tick at least two clips for the grid.");
    const clips = await Promise.all(chosen.map(async (c) => ({ ...c, clip: await c.get() })));
    clearVerdict($("domain-grid"));
    const verdicts = [];  // per clip, from /encode: its body's `domain`, else the headers
    const codes = await Promise.all(clips.map(async (c, i) => {
      const response = await call("/encode" + query({ fit: fit() }),
                                  { method: "POST", body: form({ video: c.clip }) });
      const body = await response.json();
      verdicts[i] = body.domain ? { ...body.domain, model: body.model } : verdictOf(response.headers);
      return body;
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
      const response = await call("/decode" + query({ format: "mp4", scale: SCALE }), {
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
    const clipHeader = (i) => {
      const th = document.createElement("th");
      th.append(clipVideo(clips[i].clip.blob), document.createElement("br"), clips[i].label);
      if (verdicts[i] && verdicts[i].verdict === "out") {
        th.classList.add("out");
        th.title = `outside the model's domain (score ${scoreText(verdicts[i].score)})`;
      }
      return th;
    };
    clips.forEach((_, i) => head.append(clipHeader(i)));
    for (let row = 0; row < n; row++) {
      const tr = table.insertRow();
      tr.append(clipHeader(row));
      for (let col = 0; col < n; col++) {
        const video = document.createElement("video");
        Object.assign(video, { muted: true, loop: true, autoplay: true, playsInline: true });
        video.src = urls[`${row},${col}`];
        video.title = `appearance of ${clips[row].label}, motion of ${clips[col].label}`;
        tr.insertCell().append(video);
      }
    }
    showGridVerdicts(clips, verdicts);
    return `${n} × ${n} grid: ${n * n} videos decoded.`;
  }, [$("grid-button")]);
}

// The grid's clips outside the model's domain, named with their scores, under the grid; a quiet
// line if the model cannot tell; nothing when every clip is in.
function showGridVerdicts(clips, verdicts) {
  const out = clips.map((c, i) => [c, verdicts[i]]).filter(([, v]) => v && v.verdict === "out");
  if (out.length) {
    const named = out.map(([c, v]) => `${c.label} scores ${scoreText(v.score)}`).join(", ");
    showVerdict($("domain-grid"), out[0][1], "", `${named}, where 1 is the edge of its ` +
      "training data: their rows and columns show what this model knows, not those clips. " +
      `It expects: ${model ? model.domain : "clips like its training data"}`);
    return;
  }
  showVerdict($("domain-grid"), verdicts.find((v) => v && v.verdict === "unknown") || null,
              "these clips");
}

// ---------------------------------------------------------------------------------------------
// Models: the picker, what the chosen one expects, its sample clips

function fillModels() {
  const select = $("model");
  select.innerHTML = "";
  for (const m of models) {
    const option = new Option(`${m.name}${m.default ? " (default)" : ""}: ${m.domain}`, m.name);
    option.title = m.domain;
    select.add(option);
  }
  select.hidden = models.length === 0;
}

function describeModel() {
  const info = $("model-info");
  info.textContent = "";
  info.className = "";
  const sizes = document.createElement("span");
  sizes.className = "muted";
  sizes.textContent = ` ${model.frame_size}×${model.frame_size} frames, ${model.seq_len} per ` +
    `clip; an appearance code of ${model.appearance_dim} numbers, a motion code of ` +
    `${model.motion_dim} per frame.`;
  info.append(model.domain, sizes);
  document.querySelectorAll(".seq-len").forEach((e) => { e.textContent = model.seq_len; });
  document.querySelectorAll(".frame-size").forEach((e) => { e.textContent = model.frame_size; });
  $("manifest-link").href = `/models/${encodeURIComponent(model.name)}`;
}

// One button per sample clip of the chosen model under each slot; a line when it has none.
function fillSamples() {
  for (const holder of document.querySelectorAll(".samples")) {
    const slot = holder.dataset.slot;
    holder.innerHTML = "";
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
    holder.parentElement.querySelector(".no-samples").hidden = samples.length > 0 || !model;
  }
}

function selectModel(name) {
  model = models.find((m) => m.name === name) || null;
  if (!model) return;
  $("model").value = model.name;
  describeModel();
  samples = model.samples.map((s) => ({
    url: s.url, label: s.label, file: decodeURIComponent(s.url.split("/").pop()) }));
  clearAll();
  fillSamples();
  fillSources(true);
  updateButtons();
}

async function start() {
  wireSlot("a");
  wireSlot("b");
  $("swap-button").addEventListener("click", swap);
  $("generate-button").addEventListener("click", generate);
  $("grid-button").addEventListener("click", grid);
  $("fit").addEventListener("change", () => { document.body.dataset.fit = fit(); });
  $("model").addEventListener("change", () => selectModel($("model").value));
  document.body.dataset.fit = fit();
  $("generate-n").max = 16;
  try {
    const listed = await (await call("/models")).json();
    models = listed.models;
    fillModels();
    selectModel(listed.default || models[0].name);
  } catch (error) {
    // the page still works, on the service's default model, with files the user picks
    $("model-info").textContent = error.message;
    $("model-info").className = "status error";
    fillModels();
  }
  fillSources();
  updateButtons();
}

start();
