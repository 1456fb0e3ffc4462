// The library page: index a folder or upload photos, then watch the job to 100 %.
import { api, attempt, el, toast } from "./app.js";

const root = document.getElementById("library");
const base = root.dataset.api;
const section = document.getElementById("job");
let polling = null;

function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${Math.round(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { class: h.num ? "num" : "" }, h.label ?? h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((cell, i) => el("td", { class: headers[i].num ? "num" : "" }, String(cell)))))));
}

function showJob(job) {
  if (!job) return;
  section.hidden = false;
  section.dataset.state = job.state;
  section.dataset.job = job.id;
  document.getElementById("job-state").textContent = job.state;
  document.getElementById("job-progress").value = job.percent;
  document.getElementById("job-percent").textContent = job.percent.toFixed(job.percent === 100 ? 0 : 1);
  document.getElementById("job-counts").textContent =
    `${job.done} of ${job.total} photos · ${job.photos_per_second.toFixed(1)} photos/s · ETA ${fmtSeconds(job.eta_seconds)} · ${job.faces} faces · ${job.errors.length + job.rejected.length} unreadable`;
  document.getElementById("job-message").textContent = job.message || "";
  document.getElementById("job-cancel").hidden = !job.active;
  const report = document.getElementById("job-report");
  if (job.active) { report.replaceChildren(); return; }
  const parts = [];
  if (Object.keys(job.stages).length) {
    parts.push(el("h2", {}, "Stages"), table(
      ["stage", { label: "seconds", num: true }, { label: "share", num: true }],
      Object.entries(job.stages).map(([name, s]) => [name, s.seconds.toFixed(2), `${Math.round(s.share * 100)} %`]),
    ), el("p", { class: "muted" }, `Slowest stage: ${job.slowest_stage} · ${job.found} photos found, ${job.skipped} already indexed`));
  }
  if (job.clustering && Object.keys(job.clustering).length) {
    const c = job.clustering;
    parts.push(el("p", {}, `Clustering: ${c.joined_existing} faces joined known people, ${c.clustered} grouped into ${c.new_people} new people, ${c.unassigned} left to review; ${c.people} people.`));
  }
  const bad = [...job.rejected, ...job.errors];
  if (bad.length) {
    parts.push(el("h2", {}, "Unreadable files"), table(["file", "reason"], bad.map((e) => [e.path, e.reason])));
  }
  report.replaceChildren(...parts);
}

async function refreshCounts() {
  const c = await api(base).catch(() => null);
  if (!c) return;
  document.getElementById("library-counts").textContent =
    `${c.photos} photos · ${c.faces} faces · ${c.people} people (${c.named} named) · ${c.unassigned} faces unassigned · ${c.unreadable} unreadable files`;
}

async function poll() {
  const data = await api(`${base}/jobs/current`).catch(() => null);
  if (!data) return;
  showJob(data.job);
  if (data.job && !data.job.active && polling) {
    clearInterval(polling);
    polling = null;
    refreshCounts();
  }
}

function watch(job) {
  showJob(job);
  if (!polling) polling = setInterval(poll, 500);
}

document.getElementById("folder-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const folder = document.getElementById("folder-input")?.value.trim();
  if (!folder) return;
  const job = await attempt(() => api(`${base}/jobs`, { method: "POST", json: { folder } }), "Indexing started");
  if (job) watch(job);
});

async function upload(files) {
  if (!files.length) return;
  const body = new FormData();
  for (const file of files) body.append("files", file, file.name);
  toast(`Uploading ${files.length} file(s)…`);
  const job = await attempt(() => api(`${base}/uploads`, { method: "POST", body }));
  if (job) { toast(`${job.saved} photo(s) uploaded; indexing`); watch(job); }
}

const drop = document.getElementById("upload-drop");
const input = document.getElementById("upload-files");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  upload([...event.dataTransfer.files]);
});
input.addEventListener("change", () => upload([...input.files]));

document.getElementById("job-cancel").addEventListener("click", async () => {
  const done = await attempt(() => api(`${base}/jobs/current/cancel`, { method: "POST" }), "Cancelled");
  if (done) showJob(done.job);
});

poll().then(() => { if (section.dataset.state && !["done", "failed", "cancelled"].includes(section.dataset.state)) watch(); });
