// Uploads: drop or pick several files; each is posted as an ingest job (wait=false) and its progress
// (pages done / total) followed over the job's server-sent events; refusals shown in words beside it.

import { api, events, explain, request } from "./api.js";
import { $, h, say } from "./dom.js";

const POLL_MS = 500;

function refusal(error, file) {
  if (error.status === 0 && file.size > 1024 * 1024) {
    // a server refusing a large body before reading it may close the connection while the browser
    // still sends it: the browser then reports a failed connection instead of the server's 413
    return `The server stopped the upload of ${(file.size / 1024 / 1024).toFixed(1)} MB before it finished: most often it is over the server's upload limit (PAGELENS_MAX_DOCUMENT_BYTES). ${error.message}`;
  }
  const why = {
    409: "Refused (conflict)",
    413: "Too large for this server",
    415: "Not a file type pagelens can read",
    422: "The file cannot be read",
  }[error.status];
  return why ? `${why}: ${error.message}` : explain(error);
}

export function initUploads({ getCollection, onStored }) {
  const zone = $("drop-zone");
  const input = $("file-input");

  input.addEventListener("change", () => {
    uploadAll([...input.files]);
    input.value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    uploadAll([...event.dataTransfer.files]);
  });

  function uploadAll(files) {
    const collection = getCollection();
    if (!collection || !files.length) return;
    const metadata = $("upload-metadata").value.trim();
    if (metadata) {
      try {
        const parsed = JSON.parse(metadata);
        if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
      } catch (error) {
        say($("documents-error"), `The metadata is not a JSON object (${error.message}); nothing was uploaded.`);
        return;
      }
    }
    say($("documents-error"), "");
    for (const file of files) upload(collection, file, metadata);
  }

  async function upload(collection, file, metadata) {
    const bar = h("progress", { max: 1, "aria-label": `Progress of ${file.name}` });
    const status = h("span", { className: "upload-status", role: "status" }, "uploading…");
    const item = h("li", { className: "upload" }, h("span", { className: "upload-name" }, file.name), bar, status);
    $("upload-list").prepend(item);
    const form = new FormData();
    form.append("file", file, file.name);
    if (metadata) form.append("metadata", metadata);
    let job;
    try {
      job = await api(`/collections/${encodeURIComponent(collection)}/documents?wait=false`, { method: "POST", body: form });
    } catch (error) {
      item.classList.add("failed");
      bar.remove();
      status.textContent = refusal(error, file);
      return;
    }
    status.textContent = "queued";
    const final = await follow(job, (current) => show(current, bar, status));
    show(final, bar, status);
    if (final.state === "done") {
      item.classList.add("done");
      onStored(collection);
    } else {
      item.classList.add("failed");
    }
  }

  function show(job, bar, status) {
    if (job.pages_total) {
      bar.max = job.pages_total;
      bar.value = job.pages_done;
    }
    const pages = job.pages_total ? `${job.pages_done} / ${job.pages_total} pages` : "";
    if (job.state === "done") {
      bar.value = bar.max;
      status.textContent = job.created === false ? `already stored (${pages})` : `stored: ${pages}`;
    } else if (job.state === "failed" || job.state === "cancelled") {
      status.textContent = `${job.state}: ${job.error ? job.error.message : "no reason given"}`;
    } else {
      status.textContent = `${job.state} ${pages}`.trim();
    }
  }

  /** Follow a job to its end over /jobs/{id}/events (polling /jobs/{id} if the stream breaks); its last state. */
  async function follow(job, onProgress) {
    const id = job.job_id || job.id;
    try {
      const response = await request(`/jobs/${encodeURIComponent(id)}/events`, { headers: { Accept: "text/event-stream" } });
      for await (const { data } of events(response)) {
        job = data;
        if (["done", "failed", "cancelled"].includes(job.state)) return job;
        onProgress(job);
      }
    } catch {
      // the stream broke: poll below
    }
    for (;;) {
      try {
        job = await api(`/jobs/${encodeURIComponent(id)}`);
      } catch (error) {
        return { ...job, state: "failed", error: { message: explain(error) } };
      }
      if (["done", "failed", "cancelled"].includes(job.state)) return job;
      onProgress(job);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }
}
