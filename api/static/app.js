// keel chat page: plain JavaScript over the /v1 API, no dependencies, no build step.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { threadId: null, busy: false };

function headers(extra = {}) {
  const key = $("#api-key").value.trim();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

function showError(message) {
  $("#error").textContent = message || "";
}

// keel answers errors as {"error": {"code", "message"}}.
async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.error.code}: ${body.error.message}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!response.ok) throw new Error(await errorText(response));
  return response.status === 204 ? null : response.json();
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Server-Sent Events over a fetch body (EventSource cannot POST or send headers).
async function* readSse(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

function addUserTurn(text) {
  const turn = el("article", "turn user", text);
  $("#messages").append(turn);
  turn.scrollIntoView({ block: "end" });
}

function addAssistantTurn() {
  const turn = $("#answer-template").content.firstElementChild.cloneNode(true);
  $("#messages").append(turn);
  return turn;
}

function citationItem(c) {
  const item = el("li", "citation");
  item.append(el("span", "n", `[${c.n}] `), el("span", "source", c.source));
  if (c.section) item.append(el("span", "section", ` § ${c.section}`));
  item.append(el("span", "snippet", c.snippet));
  return item;
}

function renderCitations(turn, citations) {
  turn.querySelector(".citations").replaceChildren(...(citations || []).map(citationItem));
}

function renderMarks(turn, result) {
  const marks = turn.querySelector(".marks");
  marks.replaceChildren();
  if (result.cached) marks.append(el("span", "mark cached", "cached"));
  // Finding nothing is an answer, not a failure: a neutral mark, never a degraded one.
  if (result.found === false) marks.append(el("span", "mark not-found", "not in the documents"));
  for (const reason of result.degraded || []) {
    marks.append(el("span", "mark degraded", `degraded: ${reason}`));
  }
}

function renderFinal(turn, result) {
  // The final answer is authoritative: a cached reply arrives with no tokens at all.
  turn.querySelector(".answer").textContent = result.answer;
  renderCitations(turn, result.citations);
  renderMarks(turn, result);
}

async function ensureThread() {
  if (!state.threadId) {
    const thread = await api("/v1/threads", { method: "POST" });
    setThread(thread.thread_id);
  }
  return state.threadId;
}

function setThread(threadId) {
  state.threadId = threadId;
  $("#thread-label").textContent = threadId ? `thread ${threadId}` : "no thread yet";
  for (const item of document.querySelectorAll("#threads li")) {
    item.classList.toggle("current", item.dataset.threadId === threadId);
  }
}

async function ask(question) {
  const threadId = await ensureThread();
  addUserTurn(question);
  const turn = addAssistantTurn();
  const answer = turn.querySelector(".answer");
  const timeline = turn.querySelector(".timeline");
  const steps = new Map();
  const response = await fetch(`/v1/threads/${encodeURIComponent(threadId)}/runs/stream`, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    // enqueue: the previous turn's run may still be closing on the server when this one starts.
    body: JSON.stringify({ message: question, multitask_strategy: "enqueue" }),
  });
  if (!response.ok) {
    turn.remove();
    throw new Error(await errorText(response));
  }
  for await (const { event, data } of readSse(response)) {
    if (event === "node.started") {
      const step = el("li", "running", data.node);
      steps.set(data.node, step);
      timeline.append(step);
    } else if (event === "node.finished") {
      const step = steps.get(data.node) || timeline.appendChild(el("li"));
      step.className = "done";
      step.textContent = `${data.node} ${Math.round(data.duration_ms)} ms`;
    } else if (event === "token") {
      answer.textContent += data.text;
      // An extractive sentence brings its citation along: shown as the sentence arrives.
      if (data.citation) turn.querySelector(".citations").append(citationItem(data.citation));
    } else if (event === "run.finished") {
      renderFinal(turn, data);
    } else if (event === "run.error") {
      answer.textContent = "";
      turn.querySelector(".marks").append(el("span", "mark degraded", `error: ${data.message}`));
    }
    turn.scrollIntoView({ block: "end" });
  }
  await loadThreads();
}

async function loadThreads() {
  const page = await api("/v1/threads?limit=50");
  const list = $("#threads");
  list.replaceChildren();
  for (const thread of page.threads) {
    const item = el("li");
    item.dataset.threadId = thread.thread_id;
    const active = new Date(thread.updated_at || thread.created_at);
    item.title = `${thread.thread_id}, last active ${active.toISOString()}`;
    item.append(el("span", thread.title ? "question" : "question empty", thread.title || "(no question yet)"));
    item.append(el("span", "count", `${thread.message_count} msgs · ${active.toLocaleString()}`));
    item.addEventListener("click", () => openThread(thread.thread_id).catch((e) => showError(e.message)));
    list.append(item);
  }
  setThread(state.threadId);
}

async function openThread(threadId) {
  const thread = await api(`/v1/threads/${encodeURIComponent(threadId)}`);
  setThread(thread.thread_id);
  $("#messages").replaceChildren();
  const messages = thread.messages.filter((m) => m.role === "user" || m.role === "assistant");
  messages.forEach((message, index) => {
    if (message.role === "user") {
      addUserTurn(message.content);
      return;
    }
    const turn = addAssistantTurn();
    turn.querySelector(".answer").textContent = message.content;
    renderCitations(turn, message.citations);
    // The thread keeps the marks of its last answer only.
    if (index === messages.length - 1) {
      renderMarks(turn, { cached: false, found: thread.found, degraded: thread.degraded });
    }
  });
}

async function upload(files) {
  const form = new FormData();
  for (const file of files) form.append("files", file);
  const status = $("#upload-status");
  status.className = "status";
  status.textContent = "uploading…";
  let result;
  try {
    result = await api("/v1/documents", { method: "POST", body: form });
  } catch (error) {
    // Said next to the form; the picker is cleared by the caller either way.
    status.className = "status error";
    status.textContent = `upload failed: ${error.message}`;
    return;
  }
  status.textContent =
    `${result.documents} document(s), ${result.chunks_added} chunk(s) added` +
    (result.documents_replaced ? `, ${result.documents_replaced} replaced` : "") +
    (result.documents_unchanged ? `, ${result.documents_unchanged} unchanged` : "") +
    (result.skipped.length
      ? `; skipped ${result.skipped.map((s) => `${s.path} (${s.reason})`).join(", ")}`
      : "");
}

function guarded(action) {
  return async (...args) => {
    showError("");
    try {
      await action(...args);
    } catch (error) {
      showError(error.message);
    }
  };
}

$("#ask").addEventListener("submit", guarded(async (event) => {
  event.preventDefault();
  const question = $("#question").value.trim();
  if (!question || state.busy) return;
  state.busy = true;
  $("#send").disabled = true;
  $("#question").value = "";
  try {
    await ask(question);
  } finally {
    state.busy = false;
    $("#send").disabled = false;
  }
}));

$("#question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("#ask").requestSubmit();
  }
});

$("#new-thread").addEventListener("click", () => {
  setThread(null);
  $("#messages").replaceChildren();
});

$("#upload").addEventListener("submit", guarded(async (event) => {
  event.preventDefault();
  const files = $("#files").files;
  if (files.length) await upload(files);
  $("#files").value = "";
}));

$("#api-key").value = localStorage.getItem("keel.apiKey") || "";
$("#api-key").addEventListener("change", guarded(async () => {
  localStorage.setItem("keel.apiKey", $("#api-key").value.trim());
  await loadThreads();
}));

guarded(loadThreads)();
