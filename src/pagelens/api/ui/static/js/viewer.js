// The page viewer: a document's pages one at a time (previous / next), and, when opened from a
// search, the query's similarity heatmap over the page: one token's map or all combined, with an
// opacity control. Where the route answers 409 (single-vector models, pooled pages) the control hides.

import { ApiError, api, explain, pagePath } from "./api.js";
import { $, h, say } from "./dom.js";
import { draw, mapsOf } from "./heatmap.js";
import { release, showPage, thumbnailWidth } from "./images.js";

const VIEW_CSS_WIDTH = 900;

export function initViewer() {
  const dialog = $("viewer");
  const canvas = $("heatmap-canvas");
  const select = $("heatmap-token");
  let view = null; // {collection, documentId, name, page, pages, query}
  let maps = null;
  let shown = 0;

  $("viewer-close").addEventListener("click", () => dialog.close());
  $("viewer-prev").addEventListener("click", () => turn(-1));
  $("viewer-next").addEventListener("click", () => turn(1));
  dialog.addEventListener("keydown", (event) => {
    if (["SELECT", "INPUT"].includes(event.target.tagName)) return;
    if (event.key === "ArrowLeft") turn(-1);
    if (event.key === "ArrowRight") turn(1);
  });
  $("heatmap-opacity").addEventListener("input", (event) => {
    canvas.style.opacity = event.target.value;
  });
  select.addEventListener("change", () => drawChosen());

  function turn(step) {
    if (!view) return;
    const next = view.page + step;
    if (next >= 1 && next <= (view.pages || view.page)) show(next);
  }

  async function open(options) {
    view = { ...options };
    $("viewer-title").textContent = view.name;
    // Never the page shown last time while this one loads (its page count may need a request first).
    $("viewer-page").textContent = `Page ${view.page}`;
    release($("viewer-image"));
    $("viewer-image").removeAttribute("src");
    if (!dialog.open) dialog.showModal();
    if (!view.pages) {
      try {
        const doc = await api(`/collections/${encodeURIComponent(view.collection)}/documents/${encodeURIComponent(view.documentId)}`);
        view.pages = doc.pages;
      } catch {
        view.pages = view.page; // unknown: no flipping past this page
      }
    }
    await show(view.page);
  }

  async function show(page) {
    const mine = ++shown;
    view.page = page;
    $("viewer-page").textContent = `Page ${page} of ${view.pages}`;
    $("viewer-prev").disabled = page <= 1;
    $("viewer-next").disabled = page >= view.pages;
    canvas.hidden = true;
    maps = null;
    const image = showPage($("viewer-image"), view.collection, view.documentId, page, { width: thumbnailWidth(VIEW_CSS_WIDTH) })
      .then(() => ($("viewer-image").alt = `Page ${page} of ${view.name}`))
      .catch((error) => say($("heatmap-note"), `The page image did not load. ${explain(error)}`));
    const heatmap = view.query ? loadHeatmap(page, mine) : hideHeatmap("");
    await Promise.all([image, heatmap]);
  }

  function hideHeatmap(note) {
    $("heatmap-controls").hidden = true;
    canvas.hidden = true;
    say($("heatmap-note"), note);
  }

  async function loadHeatmap(page, mine) {
    say($("heatmap-note"), "Computing the similarity map…");
    let answer;
    try {
      answer = await api(`${pagePath(view.collection, view.documentId, page)}/heatmap`, { method: "POST", json: { query: view.query } });
    } catch (error) {
      if (mine !== shown) return;
      const why = error instanceof ApiError && error.status === 409
        ? `No similarity map for this page: ${error.message}`
        : `The similarity map is not available. ${explain(error)}`;
      hideHeatmap(why);
      return;
    }
    if (mine !== shown) return;
    maps = { ...mapsOf(answer), tokens: answer.tokens };
    const options = [h("option", { value: "all" }, "All query tokens (combined)")];
    answer.tokens.forEach((token, index) => options.push(h("option", { value: String(index) }, `${index + 1}: ${token}`)));
    select.replaceChildren(...options);
    $("heatmap-controls").hidden = false;
    say($("heatmap-note"), `Similarity of “${view.query}” to each part of the page.`);
    canvas.style.opacity = $("heatmap-opacity").value;
    drawChosen();
  }

  function drawChosen() {
    if (!maps) return;
    const values = select.value === "all" ? maps.combined : maps.maps[Number(select.value)];
    draw(canvas, values, maps.rows, maps.columns);
    canvas.hidden = false;
  }

  return { open };
}
