// The collections list: each with its model binding, documents and pages; create; delete (confirmed).

import { api, explain } from "./api.js";
import { $, fill, h, plural, say } from "./dom.js";

export function modelText(model) {
  if (!model) return "no model recorded yet";
  const parts = [model.model];
  if (model.family) parts.push(model.family);
  parts.push(model.multi_vector ? `multi-vector, ${model.dim} dims` : `single vector, ${model.dim} dims`);
  if (model.pool_factor && model.pool_factor > 1) parts.push(`pooled ×${model.pool_factor}`);
  return parts.join(" · ");
}

export function summaryText(info) {
  if (info.error) return `cannot be opened: ${info.error.message}`;
  const text = `${plural(info.documents, "document")} · ${plural(info.pages, "page")} · ${modelText(info.model)}`;
  return info.compatible === false ? `${text} · not usable with this server's model: ${info.mismatch}` : text;
}

export function initCollections({ onSelect }) {
  let selected = null;
  let known = [];

  async function refresh() {
    try {
      known = (await api("/collections")).collections;
      say($("collections-error"), "");
    } catch (error) {
      say($("collections-error"), explain(error));
      return;
    }
    const list = $("collection-list");
    fill(
      list,
      known.map((info) =>
        h(
          "li",
          { className: info.name === selected ? "selected" : "" },
          h(
            "button",
            {
              type: "button",
              className: "collection-button",
              "aria-pressed": String(info.name === selected),
              onclick: () => select(info.name),
            },
            h("strong", {}, info.name),
            h("span", { className: "muted small" }, summaryText(info)),
          ),
        ),
      ),
    );
    if (!known.length) list.append(h("li", { className: "muted" }, "No collections yet."));
    if (selected && !known.some((info) => info.name === selected)) select(null);
    else if (selected) onSelect(selected, known.find((info) => info.name === selected));
  }

  function select(name) {
    selected = name;
    for (const button of document.querySelectorAll(".collection-button")) {
      const on = button.firstChild.textContent === name;
      button.setAttribute("aria-pressed", String(on));
      button.parentElement.className = on ? "selected" : "";
    }
    onSelect(name, known.find((info) => info.name === name) || null);
  }

  $("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("new-collection");
    const name = input.value.trim();
    if (!name) return;
    try {
      await api("/collections", { method: "POST", json: { name } });
      say($("create-error"), "");
      input.value = "";
      selected = name;
      await refresh();
    } catch (error) {
      say($("create-error"), explain(error));
    }
  });

  $("delete-collection").addEventListener("click", async () => {
    if (!selected) return;
    const info = known.find((item) => item.name === selected);
    const what = info && !info.error ? ` and its ${plural(info.documents, "document")}` : "";
    if (!window.confirm(`Delete the collection “${selected}”${what}? This cannot be undone.`)) return;
    try {
      await api(`/collections/${encodeURIComponent(selected)}`, { method: "DELETE" });
      selected = null;
      onSelect(null, null);
      await refresh();
    } catch (error) {
      say($("collections-error"), explain(error));
    }
  });

  return { refresh, current: () => selected };
}
