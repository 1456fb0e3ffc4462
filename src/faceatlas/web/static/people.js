import { api, attempt, el, toast } from "./app.js";
import "./forms.js";

const grid = document.getElementById("people");
const base = grid.dataset.api;
const library = document.querySelector('meta[name="library"]').content;
const pageSize = Number(grid.dataset.pageSize);
let loaded = grid.children.length;

/** Rename in place: Enter or leaving the field saves; Escape restores. */
export function wireRename(input) {
  input.dataset.saved = input.value;
  const save = async () => {
    const name = input.value.trim();
    if (name === input.dataset.saved || !name) {
      input.value = input.dataset.saved;
      return;
    }
    const done = await attempt(
      () => api(`${base}/people/${input.dataset.rename}`, { method: "PATCH", json: { name } }),
      `Named ${name}`,
    );
    if (done) {
      input.dataset.saved = done.name;
      input.value = done.name;
      input.classList.remove("unnamed");
    } else {
      input.value = input.dataset.saved;
    }
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); input.blur(); }
    if (event.key === "Escape") { input.value = input.dataset.saved; input.blur(); }
  });
  input.addEventListener("change", save);
}

function tile(p) {
  const label = p.name || `Person ${p.id}`;
  const src = p.cover_face_id ? `${base}/faces/${p.cover_face_id}/thumbnail` : "/web/static/noface.svg";
  const input = el("input", {
    class: `name${p.name ? "" : " unnamed"}`, type: "text", value: p.name || "", placeholder: "Add a name",
    "aria-label": `name of person ${p.id}`, dataset: { rename: p.id },
  });
  wireRename(input);
  return el("div", { class: `tile person-tile${p.hidden ? " hidden-person" : ""}`, dataset: { person: p.id } },
    el("a", { href: `/l/${library}/people/${p.id}` },
      el("img", { src, alt: label, loading: "lazy", width: 160, height: 160 })),
    el("div", { class: "meta" }, input,
      el("span", { class: "count" }, `${p.faces} face${p.faces === 1 ? "" : "s"} · ${p.photos} photo${p.photos === 1 ? "" : "s"}`)));
}

async function more() {
  const params = new URLSearchParams({
    offset: loaded, limit: pageSize, show: grid.dataset.show, sort: grid.dataset.sort,
  });
  if (grid.dataset.q) params.set("q", grid.dataset.q);
  const page = await attempt(() => api(`${base}/people?${params}`));
  if (!page) return;
  for (const p of page.people) grid.append(tile(p));
  loaded += page.people.length;
  if (loaded >= page.total) document.getElementById("more").replaceChildren();
}

for (const input of grid.querySelectorAll("input[data-rename]")) wireRename(input);
const button = document.querySelector("[data-more]");
if (button) {
  button.addEventListener("click", more);
  // endless scrolling: the next page loads when the button comes into view
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) more();
  }, { rootMargin: "400px" }).observe(button);
}
if (!grid.children.length && grid.dataset.q) toast("No one by that name");
