// The page at /: try a photo, look inside a face, morph two faces, read what is loaded.
// Plain script, no build step and nothing from outside: it only calls this service's /v1 API.
"use strict";

const MODELS = { dbvae: "DB-VAE", cnn: "Standard CNN" };
const $ = (id) => document.getElementById(id);
const state = { photos: [], selected: null, morph: { a: null, b: null }, threshold: 0.985 };

// The lowest the slider goes. Each photo is asked for once at this threshold and the slider then only hides
// faces in the browser. That is exact: the localiser's candidates come from the scan at the manifest's own
// scan_threshold whatever threshold is asked, and the threshold only keeps the refined faces scoring at least
// it, so the faces at or above any higher threshold are exactly the ones the service would answer there.
const FLOOR = Number($("threshold").min);

class Problem extends Error {}

// role and aria* go through setAttribute: not every browser reflects them as properties yet.
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "role") node.setAttribute("role", value);
    else if (key.startsWith("aria")) node.setAttribute(`aria-${key.slice(4).toLowerCase()}`, value);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function say(text) {
  $("status").textContent = text;
}

// An error also shows next to what failed: the status line may be out of sight by then.
function fail(where, err) {
  $(where).textContent = message(err);
  say(message(err));
}

// Any answer that is not a 2xx becomes a Problem carrying the service's problem+json detail.
async function call(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Problem(`Could not reach the service (${err.message}).`);
  }
  if (response.ok) return response;
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not problem+json (a proxy's page, say): the status line is all there is
  }
  const title = body && body.title ? body.title : `HTTP ${response.status} ${response.statusText}`.trim();
  throw new Problem(body && body.detail ? `${title}: ${body.detail}` : title);
}

function message(err) {
  return err instanceof Problem ? err.message : `Something went wrong in the page: ${err.message || err}`;
}

function form(fields) {
  const data = new FormData();
  for (const [name, file] of fields) data.append(name, file, file.name);
  return data;
}

const boxParam = (b) => `${b.x},${b.y},${b.width},${b.height}`;
const fmt = (v, digits = 3) => (v === null || v === undefined ? "n/a" : Number(v).toFixed(digits));

// --- Try a photo -------------------------------------------------------------------------------------------

async function addPhotos(files) {
  for (const file of files) {
    const photo = { file, url: URL.createObjectURL(file), img: null, answers: {}, card: null };
    state.photos.push(photo);
    photo.card = el("article", { className: "photo", ariaBusy: "true" },
      el("h3", { textContent: file.name || "photo" }), el("p", { textContent: "Looking for faces…" }));
    $("photos").append(photo.card);
    $("clear").hidden = false;
    say(`Looking for faces in ${file.name}…`);
    await detect(photo);
  }
}

async function detect(photo) {
  try {
    const [answers] = await Promise.all([
      Promise.all(Object.keys(MODELS).map(async (model) => {
        const params = new URLSearchParams({ model, threshold: FLOOR });
        const response = await call(`/v1/detect?${params}`, { method: "POST", body: form([["image", photo.file]]) });
        return [model, (await response.json()).results[0]];
      })),
      loadImage(photo),
    ]);
    photo.answers = Object.fromEntries(answers);
    renderPhoto(photo);
    say(`${photo.file.name}: ${summary(photo)}.`);
  } catch (err) {
    photo.card.replaceChildren(el("h3", { textContent: photo.file.name || "photo" }),
      el("p", { className: "error", role: "alert", textContent: message(err) }));
    say(`${photo.file.name}: ${message(err)}`);
  } finally {
    photo.card.setAttribute("aria-busy", "false");
  }
}

// A format the service reads but the browser cannot show (TIFF, say) still lists its faces, without the picture.
function loadImage(photo) {
  return new Promise((resolve) => {
    const img = el("img", { src: photo.url, alt: photo.file.name });
    img.onload = () => { photo.img = img; resolve(); };
    img.onerror = () => resolve();
  });
}

const shown = (answer) => (answer.faces || []).filter((f) => f.score >= state.threshold);

function summary(photo) {
  return Object.entries(photo.answers)
    .map(([model, answer]) => `${MODELS[model]} ${shown(answer).length} face(s)`).join(", ");
}

function renderPhoto(photo) {
  const views = el("div", { className: "views" });
  for (const [model, answer] of Object.entries(photo.answers)) {
    const stage = el("div", { className: photo.img ? "stage" : "stage list" });
    if (photo.img) {
      const img = photo.img.cloneNode();
      img.alt = `${photo.file.name}, faces found by the ${MODELS[model]}`;
      stage.append(img);
    }
    answer.faces.forEach((face, i) => stage.append(faceButton(photo, model, face, i)));
    views.append(el("figure", { className: `view ${model}` },
      el("figcaption", { className: "count" }), stage));
  }
  const children = [el("h3", { textContent: photo.file.name || "photo" })];
  if (!photo.img) children.push(el("p", { textContent: "This browser cannot show this image; its faces are listed." }));
  photo.card.replaceChildren(...children, views);
  photo.card.dataset.photo = state.photos.indexOf(photo);
  applyThreshold(photo);
  applyView();
}

function faceButton(photo, model, face, i) {
  const { x, y, width, height } = face.box;
  const label = `Face ${i + 1} by the ${MODELS[model]}, score ${fmt(face.score, 3)}`;
  const button = el("button", { type: "button", className: "face", ariaLabel: label },
    el("span", { textContent: fmt(face.score, 3) }));
  button.dataset.score = face.score;
  button.setAttribute("aria-pressed", "false");
  if (photo.img) {
    const w = photo.img.naturalWidth, h = photo.img.naturalHeight;
    Object.assign(button.style, { left: `${(100 * x) / w}%`, top: `${(100 * y) / h}%`,
      width: `${(100 * width) / w}%`, height: `${(100 * height) / h}%`,
      // Smaller boxes on top, so a face inside a larger box can still be clicked.
      zIndex: String(Math.round(1e6 * (1 - (width * height) / (w * h)))) });
  }
  button.addEventListener("click", () => select({ photo, model, face, i, button }));
  return button;
}

function applyThreshold(photo) {
  for (const view of photo.card.querySelectorAll(".view")) {
    const model = view.classList.contains("dbvae") ? "dbvae" : "cnn";
    const count = shown(photo.answers[model]).length;
    view.querySelector(".count").textContent =
      `${MODELS[model]}: ${count} face${count === 1 ? "" : "s"} at ${fmt(state.threshold, 3)} or more`;
    for (const button of view.querySelectorAll(".face")) {
      button.hidden = Number(button.dataset.score) < state.threshold;
    }
  }
}

function applyView() {
  const view = document.querySelector('input[name="view"]:checked').value;
  for (const figure of document.querySelectorAll(".view")) {
    figure.hidden = view !== "both" && !figure.classList.contains(view);
  }
}

// --- Camera, where the browser allows it (a secure context: https or localhost) ----------------------------

let stream = null;

async function startCamera() {
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
  } catch (err) {
    say(`The camera is not available: ${err.message}`);
    return;
  }
  $("video").srcObject = stream;
  $("camera").hidden = false;
  $("snap").focus();
}

function stopCamera() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  $("camera").hidden = true;
  $("camera-start").focus();
}

function snap() {
  const video = $("video");
  const canvas = el("canvas", { width: video.videoWidth, height: video.videoHeight });
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => {
    const name = `camera-${new Date().toISOString().slice(11, 19).replaceAll(":", "")}.jpg`;
    addPhotos([new File([blob], name, { type: "image/jpeg" })]);
  }, "image/jpeg", 0.92);
}

// --- Look inside -------------------------------------------------------------------------------------------

// The square the service cuts a box out as (service/localiser.py face_square): the box's larger side,
// centred on it, moved inside the photo.
function faceSquare(box, w, h) {
  const side = Math.min(Math.max(box.width, box.height), w, h);
  const left = Math.round(Math.min(Math.max(box.x + box.width / 2 - side / 2, 0), w - side));
  const top = Math.round(Math.min(Math.max(box.y + box.height / 2 - side / 2, 0), h - side));
  return [left, top, side];
}

function drawFace(canvas, face) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!face || !face.photo.img) return;
  const img = face.photo.img;
  const [left, top, side] = faceSquare(face.face.box, img.naturalWidth, img.naturalHeight);
  ctx.drawImage(img, left, top, side, side, 0, 0, canvas.width, canvas.height);
}

const faceName = (f) => `face ${f.i + 1} of ${f.photo.file.name} (${MODELS[f.model]}, score ${fmt(f.face.score, 3)})`;

async function select(face) {
  if (state.selected) state.selected.button.setAttribute("aria-pressed", "false");
  state.selected = face;
  face.button.setAttribute("aria-pressed", "true");
  $("inside-empty").hidden = true;
  $("inside-face").hidden = false;
  $("inside-label").textContent = `Selected: ${faceName(face)}.`;
  drawFace($("crop"), face);
  const img = $("reconstruction");
  img.removeAttribute("src");
  $("inside-error").textContent = "";
  say(`Reconstructing ${faceName(face)}…`);
  try {
    const params = new URLSearchParams({ box: boxParam(face.face.box) });
    const response = await call(`/v1/reconstruct?${params}`,
      { method: "POST", body: form([["image", face.photo.file]]) });
    if (state.selected !== face) return;  // another face was picked while this one was on its way
    img.src = URL.createObjectURL(await response.blob());
    say(`Reconstruction of ${faceName(face)} shown under "Look inside".`);
  } catch (err) {
    if (state.selected === face) fail("inside-error", err);
  }
}

// --- Morph -------------------------------------------------------------------------------------------------

function useFor(end) {
  const face = state.selected;
  if (!face) return;
  state.morph[end] = face;
  const canvas = $(`morph-${end}`);
  drawFace(canvas, face);
  canvas.setAttribute("aria-label", `Face ${end.toUpperCase()}: ${faceName(face)}`);
  $(`morph-${end}-label`).textContent = `${end.toUpperCase()}: ${faceName(face)}`;
  $("morph-go").disabled = !(state.morph.a && state.morph.b);
  say(`${faceName(face)} is morph face ${end.toUpperCase()}.`);
}

async function morph() {
  const { a, b } = state.morph;
  const steps = Number($("steps").value);
  const params = new URLSearchParams({ steps, box_a: boxParam(a.face.box), box_b: boxParam(b.face.box) });
  const body = () => form([["a", a.photo.file], ["b", b.photo.file]]);
  $("morph-go").disabled = true;
  $("morph-error").textContent = "";
  say("Morphing…");
  try {
    params.set("format", "json");
    const framesAsked = call(`/v1/morph?${params}`, { method: "POST", body: body() });
    params.set("format", "gif");
    const gifAsked = call(`/v1/morph?${params}`, { method: "POST", body: body() });
    const [frames, gif] = await Promise.all([framesAsked.then((r) => r.json()), gifAsked.then((r) => r.blob())]);
    showMorph(frames, URL.createObjectURL(gif));
    say(`Morph of ${frames.frames.length} frames shown.`);
  } catch (err) {
    $("morph-result").hidden = true;
    fail("morph-error", err);
  } finally {
    $("morph-go").disabled = false;
  }
}

function showMorph(body, gifUrl) {
  const srcs = body.frames.map((b64) => `data:image/png;base64,${b64}`);
  $("frames").replaceChildren(...srcs.map((src, i) =>
    el("li", {}, el("img", { src, width: 48, height: 48, alt: `Frame ${i + 1}` }))));
  const slider = $("frame");
  slider.max = srcs.length - 1;
  slider.value = 0;
  slider.oninput = () => {
    const i = Number(slider.value);
    $("morph-frame").src = srcs[i];
    $("morph-frame").alt = `Morph frame ${i + 1} of ${srcs.length}`;
    $("frame-value").textContent = `${i + 1} of ${srcs.length}`;
  };
  slider.oninput();
  $("morph-gif").src = gifUrl;
  $("gif-save").href = gifUrl;
  $("morph-distance").textContent = `Distance between A and B in latent space: ${fmt(body.latent_distance, 2)}.`;
  $("morph-result").hidden = false;
}

// --- The models --------------------------------------------------------------------------------------------

function table(caption, head, rows) {
  return el("table", {},
    el("caption", { textContent: caption }),
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", textContent: h })))),
    el("tbody", {}, ...rows.map((row) => el("tr", {},
      ...row.map((cell, i) => el(i ? "td" : "th", i ? { textContent: cell } : { scope: "row", textContent: cell }))))));
}

const ci = (value, interval) => (interval ? `${fmt(value)} [${fmt(interval[0])}, ${fmt(interval[1])}]` : fmt(value));

// Where the figures' faces and the training data came from. Training writes the training data's provenance
// under data.training_data (training/data/sources.py provenance) and what it evaluated on as data.evaluated;
// a flat data entry (source, faces, licence) is read the same way.
const PROVENANCE = [["evaluated", "Figures computed on"], ["source", "Training data"], ["faces", "Faces"],
  ["non_faces", "Non-faces"], ["licence", "Licence"], ["commercial_use", "Commercial use"]];

function provenance(data) {
  const facts = { ...data, ...(data.training_data || {}) };
  const rows = PROVENANCE.filter(([key]) => facts[key] !== undefined && facts[key] !== null && facts[key] !== "");
  if (!rows.length) return el("p", { textContent: "The manifest does not say where the data came from." });
  return el("dl", { className: "data" }, ...rows.flatMap(([key, name]) =>
    [el("dt", { textContent: name }), el("dd", { textContent: String(facts[key]) })]));
}

// `fairness` is optional in /v1/models: null or absent says the manifest has no card.
function fairnessPart(fairness) {
  if (!fairness) return [el("p", { textContent: "No fairness card in this manifest." })];
  const parts = [provenance(fairness.data || {})];
  const boot = fairness.bootstrap || {};
  for (const figures of [fairness.by_group, fairness.by_rarity].filter(Boolean)) {
    const rows = figures.bins.map((bin) => [bin.name, String(bin.faces), ci(bin.recall, bin.recall_ci),
      ci(bin.mean_score, bin.mean_score_ci)]);
    parts.push(table(`Recall by ${figures.kind} at threshold ${fmt(fairness.threshold, 2)} `
      + `(${Math.round(100 * (boot.confidence ?? 0.95))}% intervals, ${boot.resamples ?? "?"} resamples)`,
      [figures.kind === "group" ? "Group" : "Rarity decile", "Faces", "Recall", "Mean score"], rows));
    parts.push(el("p", { textContent: `Largest recall difference ${ci(figures.largest_difference,
      figures.largest_difference_ci)}, smallest ratio ${ci(figures.smallest_ratio, figures.smallest_ratio_ci)}.` }));
  }
  return parts;
}

const METRICS = ["balanced_accuracy", "roc_auc", "accuracy", "precision", "recall", "specificity"];

function modelCard(model) {
  const val = (model.metrics && model.metrics.val) || {};
  const rows = METRICS.filter((k) => k in val).map((k) => [k.replace("_", " "), fmt(val[k])]);
  if (val.reconstruction) {
    rows.push(["reconstruction PSNR (dB)", fmt(val.reconstruction.psnr_db, 1)],
      ["reconstruction SSIM", fmt(val.reconstruction.ssim)]);
  }
  const graphs = Object.entries(model.graphs).map(([role, g]) => [role, g.providers[0], g.file]);
  return el("article", { className: "model" },
    el("h3", { textContent: `${MODELS[model.name] || model.name}${model.default ? " (default)" : ""}` }),
    el("p", { className: "version", textContent: `Version ${model.version}, threshold ${fmt(model.threshold, 2)}` }),
    table("Graphs and the provider each runs on", ["Graph", "Provider", "File"], graphs),
    table(`Validation (${val.n ?? "?"} images, ${val.faces ?? "?"} faces)`, ["Metric", "Value"], rows),
    ...fairnessPart(model.fairness));
}

async function loadModels() {
  try {
    const body = await (await call("/v1/models")).json();
    const threshold = body.localiser.threshold;
    $("threshold").value = threshold;
    setThreshold();
    $("models-body").replaceChildren(
      el("p", { textContent: `Input ${body.input.size}×${body.input.size} RGB, latent space of `
        + `${body.latent_dim} dimensions. Photos are scanned for faces from ${body.localiser.min_face_size} px; `
        + `the threshold starts at the localiser's ${fmt(threshold, 3)}: a face's score, the probability the `
        + `classifier gives its refined 64×64 crop (where the model has a box head, the geometric mean of that `
        + `and of the crop the box head moves it to). Candidates need ${body.localiser.min_neighbours ?? 1} scanned windows `
        + `from ${fmt(body.localiser.scan_threshold ?? threshold, 2)} to agree on them.` }),
      el("p", { textContent: `Providers asked for: ${body.requested_providers.join(", ")}; available here: `
        + `${body.available_providers.join(", ")}.` }),
      el("div", { className: "model-list" }, ...body.models.map(modelCard)));
  } catch (err) {
    $("models-body").replaceChildren(el("p", { className: "error", role: "alert", textContent: message(err) }));
  }
}

// --- Wiring ------------------------------------------------------------------------------------------------

function setThreshold() {
  state.threshold = Number($("threshold").value);
  $("threshold-value").textContent = fmt(state.threshold, 3);
  state.photos.filter((p) => p.card.querySelector(".view")).forEach(applyThreshold);
}

function clearPhotos() {
  state.photos.forEach((p) => URL.revokeObjectURL(p.url));
  state.photos = [];
  $("photos").replaceChildren();
  $("clear").hidden = true;
  $("file").focus();
  say("Photos removed.");
}

function wire() {
  $("file").addEventListener("change", (e) => { addPhotos([...e.target.files]); e.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addPhotos([...e.dataTransfer.files]);
  });
  $("threshold").addEventListener("input", setThreshold);
  document.querySelectorAll('input[name="view"]').forEach((r) => r.addEventListener("change", applyView));
  $("clear").addEventListener("click", clearPhotos);
  $("use-a").addEventListener("click", () => useFor("a"));
  $("use-b").addEventListener("click", () => useFor("b"));
  $("morph-go").addEventListener("click", morph);
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    $("camera-start").hidden = false;
    $("camera-start").addEventListener("click", startCamera);
    $("camera-stop").addEventListener("click", stopCamera);
    $("snap").addEventListener("click", snap);
  }
  // A bug in this script still ends as a sentence on the page, never as nothing.
  window.addEventListener("error", (e) => say(message(e.error || e.message)));
  window.addEventListener("unhandledrejection", (e) => say(message(e.reason)));
  loadModels();
}

wire();
