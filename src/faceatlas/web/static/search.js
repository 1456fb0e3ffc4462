import { api, el } from "./app.js";

const root = document.getElementById("search");
const base = root.dataset.api;
const library = root.dataset.library;
const drop = document.getElementById("search-drop");
const input = document.getElementById("search-file");
const status = document.getElementById("search-status");
const hits = document.getElementById("search-hits");

async function search(file) {
  status.textContent = `Searching with ${file.name}…`;
  hits.replaceChildren();
  const body = new FormData();
  body.append("file", file);
  try {
    const result = await api(`${base}/search?top=60`, { method: "POST", body });
    const matches = result.hits.filter((h) => h.match).length;
    status.textContent = `${matches} photo(s) match (similarity ≥ ${result.threshold.toFixed(2)}); closest first.`;
    // every match, then a few of the closest non-matches (a look-alike or a bad photo of the same person)
    const shown = [...result.hits.filter((h) => h.match), ...result.hits.filter((h) => !h.match).slice(0, 6)];
    const tiles = shown.map((h) => el("a", {
      class: "tile", href: `/l/${library}/photos/${h.photo_id}`, dataset: { person: h.person_id ?? "" },
    },
    el("img", { src: `${base}/photos/${h.photo_id}/preview?size=320`, alt: h.path, loading: "lazy" }),
    el("div", { class: "meta" },
      el("span", {}, el("span", { class: `badge${h.match ? " match" : ""}` }, h.match ? "match" : "no match"), " ",
        el("span", { class: "similarity" }, h.similarity.toFixed(3))),
      el("span", { class: "name" }, h.person_name || (h.person_id ? `Person ${h.person_id}` : "Unknown")))));
    const firstMiss = shown.findIndex((h) => !h.match);
    if (firstMiss >= 0) tiles.splice(firstMiss, 0, el("h2", { class: "hits-heading" }, "Closest below the threshold"));
    hits.replaceChildren(...tiles);
  } catch (error) {
    status.textContent = error.message;
    status.classList.add("error");
  }
}

drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) search(file);
});
input.addEventListener("change", () => { if (input.files[0]) search(input.files[0]); });
