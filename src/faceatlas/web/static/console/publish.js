// Person page: publish this named person into a recognition service (the console's import-library).
import { api, attempt, el } from "/web/static/app.js";

const CONSOLE = "/api/console/v1";
const root = document.getElementById("publish");
if (root) {
  const select = document.getElementById("publish-service");
  const services = await attempt(() => api(`${CONSOLE}/services`));
  const recognition = (services?.services || []).filter((s) => s.type === "recognition");
  if (recognition.length) {
    select.replaceChildren(...recognition.map((s) => el("option", { value: s.id }, s.name)));
    root.hidden = false;
  }
  document.getElementById("publish-run").addEventListener("click", async () => {
    const json = { library: root.dataset.library, people: [root.dataset.person] };
    const report = await attempt(() =>
      api(`${CONSOLE}/services/${select.value}/import-library`, { method: "POST", json }),
    );
    if (!report) return;
    const person = report.people[0];
    document.getElementById("publish-result").textContent = person.skipped
      ? `not published: ${person.skipped}`
      : `subject ${person.subject}: +${person.added} −${person.removed} faces${person.renamed_from ? ` (renamed from ${person.renamed_from})` : ""}`;
  });
}
