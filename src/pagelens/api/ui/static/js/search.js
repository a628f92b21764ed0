// Search: a query with k, mode and a metadata filter; the results as a grid of page thumbnails (only
// thumbnails: ?width=) with score, document and page; a result opens the page with its heatmap.

import { api, explain } from "./api.js";
import { $, describeMetadata, fill, h, say } from "./dom.js";
import { release, showPage, thumbnailWidth } from "./images.js";

const THUMBNAIL_CSS_WIDTH = 180;

export function initSearch({ getCollection, openViewer }) {
  const form = $("search-form");
  let generation = 0;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const collection = getCollection();
    const query = $("search-query").value.trim();
    if (!collection || !query) return;
    const body = { query, k: Number($("search-k").value) || 10, mode: $("search-mode").value };
    const filterText = $("search-filter").value.trim();
    if (filterText) {
      try {
        body.filter = JSON.parse(filterText);
      } catch (error) {
        say($("search-status"), `The filter is not valid JSON (${error.message}).`);
        return;
      }
    }
    const mine = ++generation;
    say($("search-status"), "Searching…");
    const started = performance.now();
    let results;
    try {
      results = (await api(`/collections/${encodeURIComponent(collection)}/search`, { method: "POST", json: body })).results;
    } catch (error) {
      if (mine === generation) say($("search-status"), `The search failed. ${explain(error)}`);
      return;
    }
    if (mine !== generation) return;
    const elapsed = Math.round(performance.now() - started);
    say($("search-status"), `${results.length} result${results.length === 1 ? "" : "s"} in ${elapsed} ms`);
    show(collection, query, results);
  });

  function show(collection, query, results) {
    const grid = $("results");
    for (const img of grid.querySelectorAll("img")) release(img);
    const width = thumbnailWidth(THUMBNAIL_CSS_WIDTH);
    fill(
      grid,
      results.map((hit, index) => {
        const name = hit.name || hit.document_id;
        const img = h("img", { className: "result-thumb", alt: `Page ${hit.page} of ${name}` });
        showPage(img, collection, hit.document_id, hit.page, { width }).catch(() => {
          img.alt = `${img.alt} (not loaded)`;
        });
        const open = () => openViewer({ collection, documentId: hit.document_id, name, page: hit.page, query });
        return h(
          "li",
          { className: "result" },
          h(
            "button",
            { type: "button", className: "result-button", onclick: open, "aria-label": `Result ${index + 1}: page ${hit.page} of ${name}, score ${hit.score.toFixed(3)}` },
            img,
            h("span", { className: "result-score" }, hit.score.toFixed(3)),
            h("span", { className: "result-name" }, name),
            h("span", { className: "muted small" }, `page ${hit.page}`),
            h("span", { className: "metadata small" }, describeMetadata(hit.metadata)),
          ),
        );
      }),
    );
  }

  return {
    clear() {
      generation++;
      for (const img of $("results").querySelectorAll("img")) release(img);
      $("results").replaceChildren();
      say($("search-status"), "");
    },
  };
}
