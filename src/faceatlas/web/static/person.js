import { api, attempt, el, toast } from "./app.js";

const root = document.getElementById("person");
const base = root.dataset.api;
const library = root.dataset.library;
const personId = root.dataset.person;
const selected = new Set();
const count = document.getElementById("selected-count");
const buttons = Object.fromEntries(
  [...document.querySelectorAll("#face-actions [data-action]")].map((b) => [b.dataset.action, b]),
);

function refreshSelection() {
  count.textContent = selected.size ? `${selected.size} selected` : "Click faces to select them.";
  buttons.remove.disabled = buttons.split.disabled = selected.size === 0;
  buttons.cover.disabled = selected.size !== 1;
}

for (const tile of document.querySelectorAll("#faces [data-face]")) {
  const toggle = (event) => {
    if (event.target.closest("a")) return;
    const id = Number(tile.dataset.face);
    if (selected.has(id)) selected.delete(id); else selected.add(id);
    tile.classList.toggle("selected", selected.has(id));
    tile.setAttribute("aria-checked", String(selected.has(id)));
    refreshSelection();
  };
  tile.addEventListener("click", toggle);
  tile.addEventListener("keydown", (event) => {
    if (event.key === " " || event.key === "Enter") { event.preventDefault(); toggle(event); }
  });
}

buttons.remove.addEventListener("click", async () => {
  const done = await attempt(() => api(`${base}/people/${personId}/remove-faces`, {
    method: "POST", json: { face_ids: [...selected] },
  }), `${selected.size} face(s) removed; they will not come back to this person`);
  if (done) setTimeout(() => location.reload(), 400);
});

buttons.split.addEventListener("click", async () => {
  const name = prompt("Name of the new person (optional)") ?? null;
  if (name === null) return;
  const done = await attempt(() => api(`${base}/people/${personId}/split`, {
    method: "POST", json: { face_ids: [...selected], name: name.trim() || null },
  }));
  if (done) location.href = `/l/${library}/people/${done.id}`;
});

buttons.cover.addEventListener("click", async () => {
  const [face] = selected;
  const done = await attempt(() => api(`${base}/people/${personId}`, {
    method: "PATCH", json: { cover_face_id: face },
  }), "Cover changed");
  if (done) document.getElementById("cover").src = `${base}/faces/${face}/thumbnail?size=320`;
});

document.querySelector("[data-hide]").addEventListener("click", async (event) => {
  const hidden = event.currentTarget.dataset.hide === "true";
  const done = await attempt(() => api(`${base}/people/${personId}`, { method: "PATCH", json: { hidden } }));
  if (done) location.reload();
});

// rename in place
const nameInput = document.querySelector("input[data-rename]");
nameInput.dataset.saved = nameInput.value;
nameInput.addEventListener("keydown", (event) => { if (event.key === "Enter") nameInput.blur(); });
nameInput.addEventListener("change", async () => {
  const name = nameInput.value.trim();
  if (!name) { nameInput.value = nameInput.dataset.saved; return; }
  const done = await attempt(() => api(`${base}/people/${personId}`, { method: "PATCH", json: { name } }), `Named ${name}`);
  nameInput.value = done ? done.name : nameInput.dataset.saved;
  if (done) { nameInput.dataset.saved = done.name; document.title = `${done.name} · faceatlas`; }
});

// merge suggestions: the closest people, best first
async function loadSuggestions() {
  const box = document.getElementById("suggestions");
  const data = await attempt(() => api(`${base}/people/${personId}/suggestions`));
  if (!data) return;
  if (!data.suggestions.length) { box.replaceChildren(el("span", { class: "muted" }, "No other people yet.")); return; }
  box.replaceChildren(...data.suggestions.map((s) => {
    const label = s.name || `Person ${s.person_id}`;
    return el("button", {
      type: "button", class: "suggestion", dataset: { merge: s.person_id },
      title: `Merge ${label} into this person`,
      onclick: () => merge(s.person_id, label),
    },
    el("img", { src: s.cover_face_id ? `${base}/faces/${s.cover_face_id}/thumbnail` : "/web/static/noface.svg", alt: "" }),
    el("span", {}, label), el("span", { class: `badge${s.match ? " match" : ""}` }, s.similarity.toFixed(2)));
  }));
}

async function merge(other, label) {
  if (!confirm(`Merge ${label} into this person?`)) return;
  const done = await attempt(() => api(`${base}/people/${personId}/merge`, { method: "POST", json: { other } }));
  if (!done) return;
  toast(done.reason || `Merged ${label}`);
  setTimeout(() => location.reload(), done.reason ? 2500 : 600);
}

refreshSelection();
loadSuggestions();
