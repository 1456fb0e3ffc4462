// The review queue, driven by the keyboard: a user names hundreds of faces in minutes.
import { api, attempt, el, toast } from "./app.js";

const root = document.getElementById("review");
const base = root.dataset.api;
const library = root.dataset.library;
let items = [];
let index = 0;
let total = Number(root.dataset.total);
let exhausted = false;
let busy = false;
const photos = new Map();

const face = document.getElementById("review-face");
const suggestionsBox = document.getElementById("review-suggestions");
const position = document.getElementById("review-position");
const context = document.getElementById("review-context");
const otherForm = document.getElementById("other-form");
const otherInput = document.getElementById("other-input");

async function fetchMore() {
  if (exhausted) return;
  const page = await attempt(() => api(`${base}/review?offset=${items.length}&limit=50`));
  if (!page) return;
  total = page.total;
  if (!page.faces.length) exhausted = true;
  items.push(...page.faces);
}

async function photo(id) {
  if (!photos.has(id)) photos.set(id, api(`${base}/photos/${id}`));
  return photos.get(id);
}

function label(s) { return s.name || `Person ${s.person_id}`; }

async function show() {
  if (index >= items.length) await fetchMore();
  document.getElementById("review-total").textContent = total;
  if (!items.length) {
    root.replaceChildren(el("p", { class: "card muted", id: "review-empty" },
      "No faces to review: every face is assigned or ignored."));
    return;
  }
  index = Math.max(0, Math.min(index, items.length - 1));
  const item = items[index];
  face.src = `${base}/faces/${item.face.id}/thumbnail?size=320`;
  face.dataset.face = item.face.id;
  position.textContent = `Face ${index + 1} of ${total} to review`;
  suggestionsBox.replaceChildren(...(item.suggestions.length ? item.suggestions.map((s, i) => el("button", {
    type: "button", class: "suggestion", dataset: { person: s.person_id }, onclick: () => assign(s.person_id, label(s)),
  },
  el("kbd", {}, String(i + 1)),
  el("img", { src: s.cover_face_id ? `${base}/faces/${s.cover_face_id}/thumbnail` : "/web/static/noface.svg", alt: "" }),
  el("span", {}, label(s)),
  el("span", { class: `badge${s.match ? " match" : ""}` }, s.similarity.toFixed(2)))) : [el("span", { class: "muted" }, "No one similar yet: make a new person.")]));
  const info = await photo(item.face.photo_id).catch(() => null);
  if (info && items[index] === item) {
    const [x0, y0, x1, y1] = item.face.box;
    const box = el("a", { class: "box", href: `/l/${library}/photos/${info.id}` });
    box.style.left = `${(100 * x0) / info.width}%`;
    box.style.top = `${(100 * y0) / info.height}%`;
    box.style.width = `${(100 * (x1 - x0)) / info.width}%`;
    box.style.height = `${(100 * (y1 - y0)) / info.height}%`;
    context.replaceChildren(el("div", { class: "photo-view" },
      el("img", { src: `${base}/photos/${info.id}/preview?size=640`, alt: info.path }), box));
  }
}

async function decided(action, message) {
  if (busy || !items.length) return;
  busy = true;
  const item = items[index];
  const done = await attempt(action(item), message);
  busy = false;
  if (done === undefined) return;
  items.splice(index, 1);
  total -= 1;
  await show();
}

function assign(person, name) {
  return decided((item) => () => api(`${base}/faces/${item.face.id}/assign`, { method: "POST", json: { person } }),
    `Assigned to ${name}`);
}

function accept(n = 0) {
  const s = items[index]?.suggestions[n];
  if (s) assign(s.person_id, label(s)); else toast("No suggestion: press N for a new person", true);
}

function newPerson() {
  const name = prompt("Name of the new person (optional)");
  if (name === null) return;
  decided((item) => () => api(`${base}/faces/${item.face.id}/assign`, {
    method: "POST", json: { person: null, name: name.trim() || null },
  }), "New person");
}

function ignore() {
  decided((item) => () => api(`${base}/faces/${item.face.id}/ignore`, { method: "POST" }), "Ignored");
}

async function other() {
  otherForm.hidden = false;
  otherInput.value = "";
  otherInput.focus();
  const list = document.getElementById("people-names");
  if (!list.children.length) {
    const named = await attempt(() => api(`${base}/people?show=named&sort=name&limit=500`));
    for (const p of named?.people || []) list.append(el("option", { value: p.name }));
  }
}

otherForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = otherInput.value.trim();
  if (!value) return;
  otherForm.hidden = true;
  assign(/^\d+$/.test(value) ? Number(value) : value, value);
});

const actions = {
  accept: () => accept(0), other, new: newPerson, ignore,
  skip: () => { index += 1; show(); },
  prev: () => { index = Math.max(0, index - 1); show(); },
};
for (const button of document.querySelectorAll("[data-review]")) {
  button.addEventListener("click", () => actions[button.dataset.review]());
}

document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) {
    if (event.key === "Escape") otherForm.hidden = true;
    return;
  }
  const key = event.key.toLowerCase();
  const handlers = {
    enter: actions.accept, a: actions.accept, o: actions.other, n: actions.new, i: actions.ignore,
    s: actions.skip, arrowright: actions.skip, arrowleft: actions.prev, j: actions.skip, k: actions.prev,
  };
  if (/^[1-9]$/.test(key)) { event.preventDefault(); accept(Number(key) - 1); return; }
  if (handlers[key]) { event.preventDefault(); handlers[key](); }
});

if (face) show();
