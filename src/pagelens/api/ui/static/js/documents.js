// A collection's documents: first-page thumbnail, name, pages, metadata; open (the page viewer); delete.

import { api, explain } from "./api.js";
import { $, describeMetadata, fill, h, plural, say } from "./dom.js";
import { lazyThumbnail, release, thumbnailWidth } from "./images.js";

const THUMBNAIL_CSS_WIDTH = 96;

function sizeText(bytes) {
  if (bytes == null) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export function initDocuments({ getCollection, openViewer, onChange }) {
  let shownFor = null;

  async function refresh() {
    const collection = getCollection();
    const list = $("document-list");
    if (!collection) return;
    let documents;
    try {
      documents = (await api(`/collections/${encodeURIComponent(collection)}/documents`)).documents;
      say($("documents-error"), "");
    } catch (error) {
      say($("documents-error"), explain(error));
      return;
    }
    if (collection !== getCollection()) return; // another collection was chosen meanwhile
    for (const img of list.querySelectorAll("img")) release(img);
    shownFor = collection;
    const width = thumbnailWidth(THUMBNAIL_CSS_WIDTH);
    fill(
      list,
      documents.map((doc) => {
        const name = doc.name || doc.id;
        const img = h("img", { className: "thumb", alt: `First page of ${name}`, width: THUMBNAIL_CSS_WIDTH });
        lazyThumbnail(img, collection, doc.id, 1, width);
        const open = () => openViewer({ collection, documentId: doc.id, name, page: 1, pages: doc.pages });
        return h(
          "li",
          { className: "document", dataset: { id: doc.id } },
          h("button", { type: "button", className: "thumb-button", "aria-label": `Open ${name}`, onclick: open }, img),
          h(
            "div",
            { className: "document-text" },
            h("span", { className: "document-name" }, name),
            h("span", { className: "muted small" }, [plural(doc.pages, "page"), doc.kind, sizeText(doc.bytes)].filter(Boolean).join(" · ")),
            h("span", { className: "metadata small" }, describeMetadata(doc.metadata)),
          ),
          h(
            "div",
            { className: "document-actions" },
            h("button", { type: "button", onclick: open, "aria-label": `Open ${name}` }, "Open"),
            h("button", { type: "button", className: "danger", onclick: () => remove(doc, name), "aria-label": `Delete ${name}` }, "Delete"),
          ),
        );
      }),
    );
    if (!documents.length) list.append(h("li", { className: "muted" }, "No documents yet: upload some above."));
  }

  async function remove(doc, name) {
    const collection = getCollection();
    if (!window.confirm(`Delete “${name}” (${plural(doc.pages, "page")}) from ${collection}?`)) return;
    try {
      await api(`/collections/${encodeURIComponent(collection)}/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
    } catch (error) {
      say($("documents-error"), explain(error));
    }
    await refresh();
    onChange();
  }

  return { refresh, shownFor: () => shownFor };
}
