// Page images into <img> elements: fetched with the key (an <img src> cannot send it), shown as blob
// URLs that are revoked when replaced; thumbnails load only once they scroll into view.

import { pageImage } from "./api.js";

const urls = new WeakMap();

/** Show a page image in `img` (a JPEG `width` wide, or the full PNG); resolves once it is decoded. */
export async function showPage(img, collection, documentId, page, { width, signal } = {}) {
  const url = await pageImage(collection, documentId, page, { width, signal });
  const previous = urls.get(img);
  urls.set(img, url);
  img.src = url;
  if (previous) URL.revokeObjectURL(previous);
  try {
    await img.decode();
  } catch {
    // a replaced or removed image: nothing to wait for
  }
}

/** Release an image's blob URL (its element is being dropped). */
export function release(img) {
  const url = urls.get(img);
  if (url) URL.revokeObjectURL(url);
  urls.delete(img);
}

const pending = new Map();
const observer = new IntersectionObserver(
  (entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      const load = pending.get(entry.target);
      observer.unobserve(entry.target);
      pending.delete(entry.target);
      if (load) load();
    }
  },
  { rootMargin: "200px" },
);

/** Load a thumbnail into `img` when it comes near the viewport; `onError(error)` if that fails. */
export function lazyThumbnail(img, collection, documentId, page, width, onError) {
  pending.set(img, () =>
    showPage(img, collection, documentId, page, { width }).catch((error) => {
      img.alt = `${img.alt} (not loaded)`;
      if (onError) onError(error);
    }),
  );
  observer.observe(img);
}

/** Thumbnail widths in device pixels for a CSS width, so a grid stays sharp on dense screens. */
export function thumbnailWidth(cssWidth) {
  const wanted = Math.round(cssWidth * Math.min(window.devicePixelRatio || 1, 2));
  return Math.max(16, Math.min(2048, Math.ceil(wanted / 40) * 40));
}
