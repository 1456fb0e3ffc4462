// faceatlas web app: shared helpers for every page (no framework, no build step).
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
export const library = document.querySelector('meta[name="library"]')?.content || "default";
export const apiBase = `/api/library/v1/libraries/${encodeURIComponent(library)}`;

/** fetch() with the session's CSRF token and JSON in/out; throws Error(message) on an error status. */
export async function api(path, { method = "GET", json, body } = {}) {
  const headers = { "X-CSRF-Token": csrf, Accept: "application/json" };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(path.startsWith("/") ? path : `${apiBase}/${path}`, {
    method, headers, body, credentials: "same-origin",
  });
  if (response.status === 401) {
    location.href = `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
    throw new Error("log in first");
  }
  const data = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(data?.message || `${response.status} ${response.statusText}`);
  return data;
}

let toastTimer;
/** A short message at the bottom of the screen. */
export function toast(message, bad = false) {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = message;
  el.classList.toggle("bad", bad);
  el.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("show"), bad ? 5000 : 2500);
}

/** Run an async action; show its error as a toast instead of failing silently. */
export async function attempt(action, success) {
  try {
    const result = await action();
    if (success) toast(success);
    return result;
  } catch (error) {
    toast(error.message, true);
    return undefined;
  }
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

document.querySelector("[data-library-picker]")?.addEventListener("change", (event) => {
  location.href = `/l/${encodeURIComponent(event.target.value)}/people`;
});
