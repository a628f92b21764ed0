// Ask: a question streamed to /ask (server-sent events: sources, token..., done | error); the answer's
// [n] citations become links that open the cited page; the stage timings are shown under it.

import { ApiError, api, events, explain, request } from "./api.js";
import { $, fill, h, say } from "./dom.js";

const NO_GENERATOR_HINT =
  "Start pagelens with --llm-url URL (an OpenAI-compatible server such as vLLM or Ollama; --llm-model names its model) " +
  "or with --llm-model alone (a vision-language model loaded in the server); or set PAGELENS_LLM_URL / PAGELENS_LLM_MODEL.";

// the ask route's stage names ({embed_ms, search_ms, images_ms, ttft_ms, generate_ms, total_ms}) in words
const STAGES = { embed: "embed question", search: "search", images: "page images", ttft: "first token", generate: "generate", total: "total" };

function formatTiming(name, value) {
  if (typeof value !== "number") return `${name} ${value}`;
  const ms = name.endsWith("_ms") ? value : value * 1000; // stages without _ms are seconds
  const stage = name.replace(/_ms$|_s$|_seconds$/, "");
  return `${STAGES[stage] || stage.replace(/_/g, " ")} ${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
}

export function timingsText(done) {
  const parts = Object.entries(done.timings || {}).map(([name, value]) => formatTiming(name, value));
  const usage = done.usage || {};
  if (usage.prompt_tokens != null) parts.push(`${usage.prompt_tokens} prompt tokens`);
  if (usage.completion_tokens != null) parts.push(`${usage.completion_tokens} answer tokens`);
  if (done.cached) parts.push("from the cache");
  return parts.join(" · ");
}

export function initAsk({ getCollection, openViewer }) {
  let controller = null;
  let sources = [];
  let text = "";
  const names = new Map(); // document id -> file name (sources carry only ids)

  /** Learn the file names of the sources' documents, then show them. */
  async function nameSources(collection) {
    const unnamed = sources.filter((source) => !source.name).map((source) => source.document_id);
    const missing = [...new Set(unnamed)].filter((id) => !names.has(`${collection}/${id}`));
    if (!missing.length) return;
    await Promise.all(missing.map(async (id) => {
      try {
        const doc = await api(`/collections/${encodeURIComponent(collection)}/documents/${encodeURIComponent(id)}`);
        names.set(`${collection}/${id}`, doc.name || id);
      } catch {
        names.set(`${collection}/${id}`, id);
      }
    }));
    if (collection !== getCollection()) return;
    showSources();
    render(text);
  }

  function openSource(number) {
    const source = sources[number - 1];
    if (!source) return;
    openViewer({ collection: getCollection(), documentId: source.document_id, name: sourceName(source), page: source.page });
  }

  /** The answer text with each [n] that names a source as a link to it; everything else as text. */
  function render(text) {
    const parts = [];
    let last = 0;
    for (const match of text.matchAll(/\[(\d+)\]/g)) {
      const number = Number(match[1]);
      if (number < 1 || number > sources.length) continue;
      parts.push(text.slice(last, match.index));
      const source = sources[number - 1];
      parts.push(
        h("a", {
          href: `#source-${number}`,
          className: "cite",
          title: `Page ${source.page} of ${sourceName(source)}`,
          onclick: (event) => {
            event.preventDefault();
            openSource(number);
          },
        }, `[${number}]`),
      );
      last = match.index + match[0].length;
    }
    parts.push(text.slice(last));
    fill($("answer"), parts);
  }

  function sourceName(source) {
    return source.name || names.get(`${getCollection()}/${source.document_id}`) || source.document_id;
  }

  function showSources() {
    $("ask-sources-title").hidden = !sources.length;
    fill(
      $("ask-sources"),
      sources.map((source, index) =>
        h("li", { id: `source-${index + 1}` },
          h("a", { href: `#source-${index + 1}`, onclick: (event) => { event.preventDefault(); openSource(index + 1); } },
            `${sourceName(source)}, page ${source.page}`),
          h("span", { className: "muted small" }, ` score ${Number(source.score).toFixed(3)}`)),
      ),
    );
  }

  $("ask-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const collection = getCollection();
    const question = $("ask-question").value.trim();
    if (!collection || !question) return;
    const body = {
      question,
      k: Number($("ask-k").value) || 3,
      mode: $("ask-mode").value,
      max_tokens: Number($("ask-max-tokens").value) || 512,
      stream: true,
    };
    const filterText = $("ask-filter").value.trim();
    if (filterText) {
      try {
        body.filter = JSON.parse(filterText);
      } catch (error) {
        say($("ask-error"), `The filter is not valid JSON (${error.message}).`);
        return;
      }
    }
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    sources = [];
    text = "";
    showSources();
    render("");
    say($("ask-error"), "");
    say($("ask-timings"), "Retrieving pages…");
    try {
      const response = await request(`/collections/${encodeURIComponent(collection)}/ask`, {
        method: "POST", json: body, signal, headers: { Accept: "text/event-stream" },
      });
      for await (const { event: name, data } of events(response)) {
        if (name === "sources") {
          sources = data.sources || [];
          showSources();
          nameSources(collection);
          say($("ask-timings"), "Writing the answer…");
        } else if (name === "token") {
          text += data.text || "";
          render(text);
        } else if (name === "done") {
          render(text);
          say($("ask-timings"), timingsText(data));
        } else if (name === "error") {
          const error = data.error || data;
          say($("ask-error"), `The answer stopped: ${error.message || JSON.stringify(error)}`);
          say($("ask-timings"), "");
        }
      }
    } catch (error) {
      if (error.name === "AbortError") return;
      say($("ask-timings"), "");
      if (error instanceof ApiError && error.status === 501) {
        // the server's message names the flags; an older one may not: then the page does
        const how = error.message.includes("--llm") ? error.message : `${error.message}. ${NO_GENERATOR_HINT}`;
        say($("ask-error"), `This server has no answer model: ${how}`);
      } else {
        say($("ask-error"), `The question could not be answered. ${explain(error)}`);
      }
    }
  });

  return {
    clear() {
      if (controller) controller.abort();
      sources = [];
      text = "";
      showSources();
      render("");
      say($("ask-error"), "");
      say($("ask-timings"), "");
    },
  };
}
