// The page's start: the API key (asked once, kept in sessionStorage, asked again when refused), then
// the collections, the selected collection's documents, uploads, search and ask, and the page viewer.

import { api, explain, key, onUnauthorized } from "./api.js";
import { initAsk } from "./ask.js";
import { initCollections, summaryText } from "./collections.js";
import { $, say } from "./dom.js";
import { initDocuments } from "./documents.js";
import { initSearch } from "./search.js";
import { initUploads } from "./upload.js";
import { initViewer } from "./viewer.js";

let current = null;
const getCollection = () => current;

const viewer = initViewer();
const openViewer = (options) => viewer.open(options);
const documents = initDocuments({ getCollection, openViewer, onChange: () => collections.refresh() });
const search = initSearch({ getCollection, openViewer });
const ask = initAsk({ getCollection, openViewer });
const collections = initCollections({ onSelect: select });
initUploads({
  getCollection,
  onStored: (collection) => {
    if (collection === current) documents.refresh();
    collections.refresh();
  },
});

function select(name, info) {
  const changed = name !== current;
  current = name;
  $("no-collection").hidden = Boolean(name);
  $("collection-view").hidden = !name;
  if (!name) return;
  $("collection-title").textContent = name;
  say($("collection-summary"), info ? summaryText(info) : "");
  if (changed) {
    search.clear();
    ask.clear();
    $("upload-list").replaceChildren();
    documents.refresh();
  }
}

// ------------------------------------------------------------------ tabs (arrow keys move between them)
const tabs = [...document.querySelectorAll('[role="tab"]')];
function chooseTab(tab) {
  for (const other of tabs) {
    const on = other === tab;
    other.setAttribute("aria-selected", String(on));
    other.tabIndex = on ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !on;
  }
}
for (const tab of tabs) {
  tab.addEventListener("click", () => chooseTab(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
    chooseTab(next);
    next.focus();
  });
}

// ------------------------------------------------------------------ the key
const keyDialog = $("key-dialog");
function askForKey(message) {
  say($("key-message"), message);
  $("app").hidden = true;
  if (!keyDialog.open) keyDialog.showModal();
  $("key-input").focus();
}
keyDialog.addEventListener("cancel", (event) => event.preventDefault()); // nothing works without a key
$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = $("key-input").value.trim();
  if (!value) return;
  key.set(value);
  $("key-input").value = "";
  keyDialog.close();
  await start();
});
$("change-key").addEventListener("click", () => {
  key.clear();
  askForKey("");
});
onUnauthorized(() => askForKey("The server refused that API key. Enter it again."));

async function start() {
  if (!key.get()) {
    askForKey("");
    return;
  }
  try {
    const info = await api("/");
    const model = info.model ? info.model.model || info.model.name || "" : "";
    say($("server-status"), `${model}${info.ready ? "" : " (loading)"}`);
  } catch (error) {
    if (error.status === 401) return; // asked again
    say($("server-status"), explain(error));
  }
  $("app").hidden = false;
  await collections.refresh();
}

start();
