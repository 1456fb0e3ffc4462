// The service console: services and keys, collection uploads, subject actions, "try it".
import { api, attempt, el, toast } from "/web/static/app.js";

const CONSOLE = "/api/console/v1";
// A key is shown once (at creation or rotation); this browser tab remembers it for "try it".
const keyStore = {
  get: (serviceId) => sessionStorage.getItem(`faceatlas.key.${serviceId}`) || "",
  set: (serviceId, key) => sessionStorage.setItem(`faceatlas.key.${serviceId}`, key),
};

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // plain http on a LAN has no clipboard API: copy through a selected text field
  const field = el("textarea", { class: "offscreen" }, text);
  document.body.append(field);
  field.select();
  document.execCommand("copy");
  field.remove();
}

/** Files dropped on ``zone`` go to ``onFiles`` (the zone is highlighted while they hover over it). */
function acceptDrops(zone, onFiles) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) onFiles([...event.dataTransfer.files]);
  });
}

// ------------------------------------------------------------------------------------ services page
function showKey(record) {
  keyStore.set(record.id, record.api_key);
  const panel = document.getElementById("key-panel");
  if (!panel) return;
  document.getElementById("key-service").textContent = record.name;
  document.getElementById("key-value").textContent = record.api_key;
  panel.hidden = false;
  panel.scrollIntoView({ block: "nearest" });
}

function servicesPage() {
  const form = document.getElementById("create-service");
  if (!form) return;
  const pending = sessionStorage.getItem("faceatlas.newkey");
  if (pending) {
    sessionStorage.removeItem("faceatlas.newkey");
    showKey(JSON.parse(pending));
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const record = await attempt(() =>
      api(`${CONSOLE}/services`, { method: "POST", json: { name: data.get("name"), type: data.get("type") } }),
    );
    if (!record) return;
    // reload the table, then show the key (kept in this tab only, never on the server page)
    sessionStorage.setItem("faceatlas.newkey", JSON.stringify(record));
    location.reload();
  });
  document.getElementById("key-copy")?.addEventListener("click", async () => {
    await attempt(() => copyText(document.getElementById("key-value").textContent), "Key copied");
  });
  for (const row of document.querySelectorAll("tr[data-service]")) {
    const id = row.dataset.service;
    const name = row.dataset.name;
    row.querySelector('[data-action="rotate"]').addEventListener("click", async () => {
      if (!confirm(`Give "${name}" a new API key? The old key stops working at once.`)) return;
      const record = await attempt(() => api(`${CONSOLE}/services/${id}/rotate-key`, { method: "POST" }), "New key made");
      if (record) showKey(record);
    });
    row.querySelector('[data-action="delete"]').addEventListener("click", async () => {
      if (!confirm(`Delete service "${name}" and its whole face collection? This cannot be undone.`)) return;
      const done = await attempt(() => api(`${CONSOLE}/services/${id}`, { method: "DELETE" }));
      if (done) row.remove();
    });
    row.querySelector('[data-action="rename"]').addEventListener("click", async () => {
      const wanted = prompt("New name of the service", name);
      if (!wanted || wanted === name) return;
      const done = await attempt(() => api(`${CONSOLE}/services/${id}`, { method: "PATCH", json: { name: wanted } }));
      if (done) location.reload();
    });
  }
}

// ------------------------------------------------------------------------------------ uploads
function uploader() {
  const form = document.getElementById("upload");
  if (!form) return;
  const service = form.dataset.service;
  const input = document.getElementById("upload-files");
  const drop = document.getElementById("upload-drop");
  const results = document.getElementById("upload-results");

  async function send(files) {
    const subject = (form.elements.subject.value || "").trim();
    if (!subject) {
      toast("Give the subject's name first", true);
      form.elements.subject.focus();
      return;
    }
    const body = new FormData();
    body.append("subject", subject);
    for (const file of files) body.append("files", file, file.name);
    results.replaceChildren(el("li", { class: "muted" }, `Adding ${files.length} image(s)…`));
    const answer = await attempt(() => api(`${CONSOLE}/services/${service}/images`, { method: "POST", body }));
    if (!answer) {
      results.replaceChildren();
      return;
    }
    results.replaceChildren(
      ...answer.results.map((r) =>
        el("li", { class: r.error ? "error" : "ok", dataset: { file: r.file } },
          r.error ? `${r.file}: ${r.error}` : `${r.file}: added to ${r.subject}`),
      ),
    );
    toast(`${answer.added} of ${answer.results.length} added`, answer.added < answer.results.length);
    if (answer.added) setTimeout(() => location.reload(), 1200);
  }
  input.addEventListener("change", () => input.files.length && send([...input.files]));
  acceptDrops(drop, send);
}

// ------------------------------------------------------------------------------------ subject page
function subjectPage() {
  const root = document.getElementById("subject");
  if (!root) return;
  const { service, subjectId, subject } = root.dataset;
  const base = `${CONSOLE}/services/${service}`;
  document.getElementById("subject-rename").addEventListener("click", async () => {
    const wanted = document.getElementById("subject-name").value.trim();
    if (!wanted || wanted === subject) return;
    const answer = await attempt(() => api(`${base}/subjects/${subjectId}`, { method: "PUT", json: { name: wanted } }));
    if (answer) location.href = `/console/services/${service}/subjects/${answer.id}`;
  });
  document.getElementById("subject-delete").addEventListener("click", async () => {
    if (!confirm(`Delete subject "${subject}" and all its images?`)) return;
    const done = await attempt(() => api(`${base}/subjects/${subjectId}`, { method: "DELETE" }));
    if (done) location.href = `/console/services/${service}`;
  });
  for (const button of document.querySelectorAll("[data-delete-image]")) {
    button.addEventListener("click", async () => {
      if (!confirm("Delete this image from the collection?")) return;
      const id = button.dataset.deleteImage;
      const done = await attempt(() => api(`${base}/images/${id}`, { method: "DELETE" }), "Image deleted");
      if (done) button.closest(".tile").remove();
    });
  }
}

// ------------------------------------------------------------------------------------ try it
const ENDPOINTS = {
  recognition: "/api/v1/recognition/recognize",
  detection: "/api/v1/detection/detect",
  verification: "/api/v1/verification/verify",
};

function faceLabel(face) {
  const parts = [];
  if (face.subjects?.length) parts.push(`${face.subjects[0].subject} ${face.subjects[0].similarity.toFixed(3)}`);
  else if (face.subjects) parts.push("no match");
  if (face.similarity !== undefined) parts.push(`similarity ${face.similarity.toFixed(3)}`);
  if (face.age) parts.push(`age ${face.age.low}-${face.age.high}`);
  if (face.gender) parts.push(face.gender.value);
  if (face.mask) parts.push(face.mask.value.replace("_", " "));
  if (face.pose) parts.push(`yaw ${Math.round(face.pose.yaw)}°`);
  return parts.join(" · ");
}

async function drawFaces(container, file, faces, title) {
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.src = url;
  await image.decode();
  const canvas = el("canvas", { class: "try-canvas", "aria-label": title });
  const scale = Math.min(1, 900 / image.naturalWidth);
  canvas.width = Math.round(image.naturalWidth * scale);
  canvas.height = Math.round(image.naturalHeight * scale);
  const g = canvas.getContext("2d");
  g.drawImage(image, 0, 0, canvas.width, canvas.height);
  URL.revokeObjectURL(url);
  const labels = [];
  g.lineWidth = Math.max(2, canvas.width / 300);
  g.font = `${Math.max(12, Math.round(canvas.width / 45))}px system-ui, sans-serif`;
  for (const face of faces) {
    const b = face.box;
    const [x, y, w, h] = [b.x_min * scale, b.y_min * scale, (b.x_max - b.x_min) * scale, (b.y_max - b.y_min) * scale];
    g.strokeStyle = "#ffd400";
    g.strokeRect(x, y, w, h);
    const label = faceLabel(face);
    labels.push(label);
    if (label) {
      const width = g.measureText(label).width + 8;
      const size = parseInt(g.font, 10);
      const top = Math.min(y + h, canvas.height - size - 6);
      g.fillStyle = "#ffd400";
      g.fillRect(x, top, width, size + 6);
      g.fillStyle = "#111";
      g.fillText(label, x + 4, top + size);
    }
  }
  const figure = el("figure", { class: "try-figure" }, canvas,
    el("figcaption", { class: "try-labels" }, labels.length ? labels.map((l) => el("div", { class: "try-label" }, l)) : "no face"));
  container.append(figure);
}

function tryIt() {
  const root = document.getElementById("tryit");
  if (!root) return;
  const { service, type } = root.dataset;
  const keyInput = document.getElementById("try-key");
  keyInput.value = keyStore.get(service);
  keyInput.addEventListener("change", () => keyStore.set(service, keyInput.value.trim()));
  const chosen = {};

  function query() {
    const params = new URLSearchParams();
    const plugins = [...root.querySelectorAll('input[name="plugin"]:checked')].map((c) => c.value);
    if (plugins.length) params.set("face_plugins", plugins.join(","));
    const threshold = document.getElementById("try-threshold").value;
    if (threshold !== "") params.set("det_prob_threshold", threshold);
    const predictions = document.getElementById("try-predictions");
    if (predictions && predictions.value !== "") params.set("prediction_count", predictions.value);
    const limit = document.getElementById("try-limit").value;
    if (limit !== "" && limit !== "0") params.set("limit", limit);
    return params.toString();
  }

  async function run() {
    const key = keyInput.value.trim();
    if (!key) {
      toast("Paste the service's API key first (it is shown once, when the service is made or its key rotated)", true);
      keyInput.focus();
      return;
    }
    const fields = type === "verification" ? ["source_image", "target_image"] : ["file"];
    if (fields.some((f) => !chosen[f])) {
      toast("Choose the image(s) first", true);
      return;
    }
    const qs = query();
    const path = `${ENDPOINTS[type]}${qs ? `?${qs}` : ""}`;
    const body = new FormData();
    for (const f of fields) body.append(f, chosen[f], chosen[f].name);
    const response = await fetch(path, { method: "POST", headers: { "x-api-key": key }, body });
    const text = await response.text();
    let data = null;
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
    document.getElementById("try-result").hidden = false;
    const status = document.getElementById("try-status");
    status.textContent = `HTTP ${response.status}`;
    status.className = `badge ${response.ok ? "match" : ""}`;
    document.getElementById("try-json").textContent = text;
    const files = fields.map((f) => `-F "${f}=@${chosen[f].name}"`).join(" ");
    document.getElementById("try-curl").textContent =
      `curl -X POST "${location.origin}${path}" \\\n  -H "x-api-key: ${key}" \\\n  ${files}`;
    const canvases = document.getElementById("try-canvases");
    canvases.replaceChildren();
    if (!response.ok || !data) return;
    if (type === "verification") {
      const result = data.result?.[0];
      if (result) {
        await drawFaces(canvases, chosen.source_image, [result.source_image_face], "source image");
        await drawFaces(canvases, chosen.target_image, result.face_matches || [], "target image");
      }
    } else {
      await drawFaces(canvases, chosen.file, data.result || [], "image");
    }
  }

  for (const input of root.querySelectorAll("[data-try-file]")) {
    input.addEventListener("change", () => {
      if (!input.files.length) return;
      chosen[input.dataset.tryFile] = input.files[0];
      input.closest(".dropzone").querySelector("strong").textContent = input.files[0].name;
      if (type !== "verification") attempt(run);
    });
  }
  for (const drop of root.querySelectorAll("[data-try-drop]")) {
    acceptDrops(drop, ([file]) => {
      chosen[drop.dataset.tryDrop] = file;
      drop.querySelector("strong").textContent = file.name;
      if (type !== "verification") attempt(run);
    });
  }
  document.getElementById("try-run")?.addEventListener("click", () => attempt(run));
  // files picked while the page was still loading, before the listeners above existed
  for (const input of root.querySelectorAll("[data-try-file]")) {
    if (input.files.length) input.dispatchEvent(new Event("change"));
  }
}

servicesPage();
uploader();
subjectPage();
tryIt();

// ------------------------------------------------------------------------------------ library import
(function libraryImport() {
  const form = document.getElementById("import-library");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const json = { library: data.get("library"), faces_per_person: Number(data.get("faces_per_person")) };
    const report = await attempt(() =>
      api(`${CONSOLE}/services/${form.dataset.service}/import-library`, { method: "POST", json }),
    );
    if (!report) return;
    const added = report.people.reduce((n, p) => n + p.added, 0);
    const removed = report.people.reduce((n, p) => n + p.removed, 0);
    const skipped = report.people.filter((p) => p.skipped).map((p) => `${p.name}: ${p.skipped}`);
    document.getElementById("import-result").textContent = report.changed
      ? `${report.people.length} people: +${added} −${removed} faces${skipped.length ? `; ${skipped.join("; ")}` : ""}`
      : `nothing changed${skipped.length ? `; ${skipped.join("; ")}` : ""}`;
    if (report.changed) setTimeout(() => location.reload(), 1500);
  });
})();
