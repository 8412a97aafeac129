// picscope web app: search, "more like this", "like this, but…", sessions with relevance marks, explanations.
// Plain ES modules, no build step. State lives in `state`; every view is re-rendered from it.

import { api, ApiError } from "./api.js";
import { el, renderPendingExplanation, renderSearchExplanation, renderSessionExplanation } from "./explain.js";

const PAGE = 24;
const $ = (id) => document.getElementById(id);

const state = {
  mode: "search", // or "session"
  kind: null, // what the grid shows: "search" | "similar" | "session"
  request: null, // the last search request (for "show more")
  similarOf: null, // { id } or { upload } for "more like this"
  items: [], // results shown in the grid
  offset: 0,
  reference: null, // { id, label, thumb } or { upload, label, thumb }
  turns: [],
  session: null,
  viewerIndex: -1,
  focusIndex: 0,
  busy: false,
  requestReference: null, // the reference label of the request the grid shows (for the Why panel)
};

// ---- messages ----------------------------------------------------------------------------------------------
function say(text) {
  $("message").textContent = text;
}

function fail(err) {
  const box = $("error");
  const msg = err instanceof ApiError ? err.message : `unexpected error: ${err && err.message ? err.message : err}`;
  box.textContent = msg;
  box.hidden = false;
  say("");
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function busy(label, fn) {
  if (state.busy) return;
  state.busy = true;
  document.body.setAttribute("aria-busy", "true");
  clearError();
  say(label);
  try {
    await fn();
  } catch (err) {
    fail(err);
  } finally {
    state.busy = false;
    document.body.removeAttribute("aria-busy");
  }
}

// ---- the grid ----------------------------------------------------------------------------------------------
function markButtons(item, index) {
  const relevant = el("button", {
    type: "button", class: "mark mark-yes", "aria-pressed": String(item.mark === true),
    "aria-label": `Mark ${item.name} relevant`, title: "Relevant (r)", tabindex: "-1",
    onclick: () => mark(index, true),
  }, "✓ Relevant");
  const irrelevant = el("button", {
    type: "button", class: "mark mark-no", "aria-pressed": String(item.mark === false),
    "aria-label": `Mark ${item.name} not relevant`, title: "Not relevant (x)", tabindex: "-1",
    onclick: () => mark(index, false),
  }, "✗ Not relevant");
  return el("div", { class: "marks" }, relevant, irrelevant);
}

function card(item, index) {
  const label = `${item.name}, rank ${index + 1}, score ${item.score.toFixed(3)}`;
  const open = el("button", {
    type: "button", class: "thumb", "data-index": String(index), "aria-label": `Open ${label}`,
    tabindex: index === state.focusIndex ? "0" : "-1",
    onclick: () => openViewer(index), onfocus: () => { state.focusIndex = index; },
  }, el("img", {
    src: item.thumbnail_url, alt: item.name, loading: "lazy", decoding: "async", width: "256", height: "256",
  }));
  const meta = el("div", { class: "card-meta" },
    el("span", { class: "rank", text: `#${index + 1}` }),
    el("span", { class: "score", title: "cosine score (its scale depends on the encoder)", text: item.score.toFixed(3) }),
    typeof item.relevance === "number"
      ? el("span", { class: "relevance", title: "calibrated relevance: estimated chance that the photo matches", text: `${Math.round(item.relevance * 100)}%` })
      : null,
    el("span", { class: "name", title: item.path, text: item.name }));
  const similar = item.similar_count
    ? el("div", { class: "similar", title: `${item.similar_count} copies or near-identical photos folded into this one`, text: `+${item.similar_count} similar` })
    : null;
  const classes = ["card"];
  if (item.mark === true) classes.push("is-relevant");
  if (item.mark === false) classes.push("is-irrelevant");
  return el("li", { class: classes.join(" "), "data-id": String(item.id) }, open, meta, similar,
    state.kind === "session" ? markButtons(item, index) : null);
}

function renderGrid() {
  const grid = $("results");
  grid.replaceChildren(...state.items.map(card));
  $("results-heading").textContent = state.items.length ? `Results (${state.items.length})` : "Results";
  $("more-button").hidden = state.kind === "session" || state.items.length === 0 || state.items.length % PAGE !== 0;
  $("session-bar").hidden = state.kind !== "session";
  $("turns").hidden = state.kind !== "search" || state.mode !== "search";
  renderTurns();
}

function focusCard(index) {
  const buttons = [...document.querySelectorAll("#results .thumb")];
  if (!buttons.length) return;
  const i = Math.max(0, Math.min(buttons.length - 1, index));
  buttons.forEach((b, j) => b.setAttribute("tabindex", j === i ? "0" : "-1"));
  state.focusIndex = i;
  buttons[i].focus();
}

function columns() {
  const cards = [...document.querySelectorAll("#results .card")];
  if (cards.length < 2) return 1;
  const top = cards[0].offsetTop;
  const n = cards.findIndex((c) => c.offsetTop !== top);
  return n === -1 ? cards.length : n;
}

// ---- searching ---------------------------------------------------------------------------------------------
function searchRequest(text) {
  const request = { text, k: PAGE, offset: 0, turns: [...state.turns], pipeline: $("pipeline").value, dedupe: true };
  if (state.reference) request.reference = state.reference.id ? { id: state.reference.id } : { upload: state.reference.upload };
  state.requestReference = state.reference ? state.reference.label : null;
  return request;
}

function showSearch(response, append) {
  state.kind = "search";
  state.items = append ? [...state.items, ...response.results] : response.results;
  renderGrid();
  renderSearchExplanation($("explain-body"), response, state.requestReference);
  const n = response.results.length;
  say(n ? `${state.items.length} photos for “${response.query}” (${response.seconds.toFixed(2)} s)` : "No photos found.");
}

async function runSearch() {
  const text = $("q").value.trim();
  if (!text) {
    if (state.reference) return similar(state.reference);
    fail(new ApiError(400, "Type what you are looking for (or upload a photo and choose Find similar)."));
    $("q").focus();
    return;
  }
  if (state.mode === "session") return startSession(text);
  await busy("Searching…", async () => {
    state.request = searchRequest(text);
    state.offset = 0;
    state.focusIndex = 0;
    showSearch(await api.search(state.request), false);
  });
}

async function showMore() {
  await busy("Loading more…", async () => {
    state.offset = state.items.length;
    if (state.kind === "similar") {
      const response = await api.similar({ ...state.similarOf, k: PAGE, offset: state.offset });
      state.items = [...state.items, ...response.results];
      renderGrid();
    } else if (state.request) {
      showSearch(await api.search({ ...state.request, offset: state.offset }), true);
    }
    focusCard(state.offset);
  });
}

async function similar(ref) {
  closeViewer();
  await busy("Finding similar photos…", async () => {
    state.similarOf = ref.id ? { id: ref.id } : { upload: ref.upload };
    const response = await api.similar({ ...state.similarOf, k: PAGE, offset: 0 });
    state.kind = "similar";
    state.items = response.results;
    state.focusIndex = 0;
    renderGrid();
    $("more-button").hidden = response.results.length < PAGE;
    renderSearchExplanation($("explain-body"), response, ref.label || null);
    say(`${response.results.length} photos like ${ref.label || "the reference"}`);
  });
  focusCard(0);
}

// ---- reference photo ("like this, but…") -------------------------------------------------------------------
function setReference(ref) {
  state.reference = ref;
  const box = $("reference");
  box.hidden = !ref;
  if (ref) {
    $("reference-thumb").src = ref.thumb;
    $("reference-thumb").alt = `Reference: ${ref.label}`;
    $("reference-label").textContent = `Like ${ref.label}, but…`;
    $("q-label").textContent = "What should be different?";
    $("q").placeholder = "e.g. at night, with two people";
    renderPendingExplanation($("explain-body"), [`Reference photo: ${ref.label}.`,
      "Type what should be different and press Search, or choose Find similar."]);
  } else {
    $("reference-thumb").removeAttribute("src");
    $("q-label").textContent = "Describe the photo you mean";
    $("q").placeholder = "e.g. two dogs playing in the snow";
    if (state.kind) renderPendingExplanation($("explain-body"), ["No reference photo: the next search uses your words only."]);
  }
}

// Controls belong to a mode: the pipeline to plain search, feedback and page size to sessions.
function setMode(mode) {
  state.mode = mode;
  for (const node of document.querySelectorAll(".search-only")) node.hidden = mode !== "search";
  for (const node of document.querySelectorAll(".session-only")) node.hidden = mode !== "session";
  $("turns").hidden = state.kind !== "search" || mode !== "search";
}

async function uploadFile(file) {
  if (!file) return;
  await busy("Uploading…", async () => {
    const up = await api.upload(file);
    setReference({ upload: up.id, label: `your photo (${file.name})`, thumb: up.thumbnail_url });
    say("Photo uploaded: type what should be different, or choose Find similar.");
    $("q").value = "";
    $("q").focus();
  });
  $("upload").value = "";
}

// ---- sessions ----------------------------------------------------------------------------------------------
function showSession(session, note) {
  state.kind = "session";
  state.session = session;
  state.items = session.page;
  renderGrid();
  $("session-round").textContent = String(session.round);
  $("session-query").textContent = session.current_query;
  const last = session.history[session.history.length - 1];
  $("session-why").textContent = last ? `— ${last.why}` : "";
  const marks = session.page.filter((p) => p.mark !== null);
  const yes = marks.filter((p) => p.mark === true).length;
  $("session-counts").textContent = `${yes} relevant, ${marks.length - yes} not relevant on this page · ${session.shown} photos shown in this session`;
  renderSessionExplanation($("explain-body"), session);
  if (!session.page.length) say("No photos left that were not shown before: go back a round or start again.");
  else if (note) say(note);
}

async function startSession(text) {
  await busy("Starting a session…", async () => {
    const body = { query: text, strategy: $("strategy").value, page_size: Number($("page-size").value) };
    if (state.reference) body.reference = state.reference.id ? { id: state.reference.id } : { upload: state.reference.upload };
    state.focusIndex = 0;
    showSession(await api.createSession(body), "Mark photos relevant (r) or not relevant (x), then Refine.");
  });
}

async function mark(index, relevant) {
  const item = state.items[index];
  if (!item || !state.session) return;
  await busy("Saving the mark…", async () => {
    const s = await api.mark(state.session.id, [item.id], relevant, state.session.round);
    showSession(s, `${item.name} marked ${relevant ? "relevant" : "not relevant"}.`);
  });
  if (!$("viewer").open) focusCard(index);
  else updateViewerMarks();
}

async function refine() {
  if (!state.session) return;
  await busy("Refining: searching the next round…", async () => {
    state.focusIndex = 0;
    const s = await api.next(state.session.id, state.session.round);
    const last = s.history[s.history.length - 1];
    showSession(s, `Round ${s.round}: ${s.page.length} new photos. ${last ? last.why : ""}`);
  });
  focusCard(0);
}

async function undo() {
  if (!state.session) return;
  await busy("Undoing…", async () => {
    const s = await api.undo(state.session.id);
    showSession(s, `Undone: ${s.removed.length} mark(s).`);
  });
}

async function back() {
  if (!state.session) return;
  await busy("Going back a round…", async () => {
    showSession(await api.back(state.session.id, state.session.round), "Back to the previous round.");
  });
}

// ---- the large view ----------------------------------------------------------------------------------------
async function openViewer(index) {
  const item = state.items[index];
  if (!item) return;
  state.viewerIndex = index;
  const dialog = $("viewer");
  $("viewer-image").src = item.image_url;
  $("viewer-image").alt = item.name;
  $("viewer-title").textContent = item.name;
  $("viewer-path").textContent = item.path;
  $("viewer-caption").textContent = "";
  $("viewer-meta").textContent = `rank ${index + 1} · score ${item.score.toFixed(3)} · id ${item.id}`;
  $("prev-button").disabled = index === 0;
  $("next-button").disabled = index >= state.items.length - 1;
  updateViewerMarks();
  if (!dialog.open) dialog.showModal();
  try {
    const info = await api.info(item.id);
    if (state.viewerIndex !== index) return;
    $("viewer-caption").textContent = info.caption || "No caption stored for this photo.";
    const size = info.width && info.height ? `${info.width}×${info.height} · ` : "";
    $("viewer-meta").textContent = `${size}${(info.size / 1024).toFixed(0)} KB · rank ${index + 1} · score ${item.score.toFixed(3)} · id ${item.id}`;
  } catch (err) {
    $("viewer-caption").textContent = "";
  }
}

function updateViewerMarks() {
  const session = state.kind === "session";
  const item = state.items[state.viewerIndex];
  for (const [id, value] of [["viewer-relevant", true], ["viewer-irrelevant", false]]) {
    const b = $(id);
    b.hidden = !session;
    b.setAttribute("aria-pressed", String(!!item && item.mark === value));
  }
}

function closeViewer() {
  const dialog = $("viewer");
  if (dialog.open) dialog.close();
}

function viewerItemRef() {
  const item = state.items[state.viewerIndex];
  return item ? { id: item.id, label: item.name, thumb: item.thumbnail_url } : null;
}

// ---- library status ----------------------------------------------------------------------------------------
async function loadStatus() {
  try {
    const s = await api.status();
    $("library-status").textContent = `${s.files.toLocaleString()} photos indexed · encoder ${s.encoder} · store ${s.store}` +
      (s.errors ? ` · ${s.errors} problem files` : "") + ` · ${s.path}`;
  } catch (err) {
    $("library-status").textContent = `Library status unavailable: ${err.message}`;
  }
}

// ---- wiring ------------------------------------------------------------------------------------------------
function renderTurns() {
  $("turn-list").replaceChildren(...state.turns.map((t, i) => el("li", { class: "chip" }, t,
    el("button", { type: "button", class: "icon", "aria-label": `Remove the detail “${t}”`, onclick: () => {
      state.turns.splice(i, 1);
      runSearch();
    } }, "×"))));
}

function isTyping(target) {
  return target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT");
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const viewerOpen = $("viewer").open;
  if (viewerOpen) {
    if (event.key === "ArrowLeft" && state.viewerIndex > 0) { event.preventDefault(); openViewer(state.viewerIndex - 1); }
    else if (event.key === "ArrowRight" && state.viewerIndex < state.items.length - 1) { event.preventDefault(); openViewer(state.viewerIndex + 1); }
    else if (event.key === "m") { const ref = viewerItemRef(); if (ref) similar(ref); }
    else if (state.kind === "session" && (event.key === "r" || event.key === "x")) mark(state.viewerIndex, event.key === "r");
    return;
  }
  if (isTyping(event.target)) return;
  if (event.key === "/") { event.preventDefault(); $("q").focus(); $("q").select(); return; }
  if (event.key === "?") { $("keys").showModal(); return; }
  const inGrid = event.target.classList && event.target.classList.contains("thumb");
  if (state.kind === "session" && event.key === "n") { refine(); return; }
  if (state.kind === "session" && event.key === "u") { undo(); return; }
  if (!inGrid) return;
  const i = Number(event.target.dataset.index);
  const cols = columns();
  const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols, Home: -i, End: state.items.length };
  if (event.key in moves) { event.preventDefault(); focusCard(i + moves[event.key]); return; }
  if (event.key === "m") similar({ id: state.items[i].id, label: state.items[i].name });
  else if (state.kind === "session" && (event.key === "r" || event.key === "x")) mark(i, event.key === "r");
}

function init() {
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
  $("turn-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("turn").value.trim();
    if (!t) return;
    state.turns.push(t);
    $("turn").value = "";
    runSearch();
  });
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => setMode(radio.value));
  }
  $("upload").addEventListener("change", (e) => uploadFile(e.target.files[0]));
  $("reference-clear").addEventListener("click", () => { setReference(null); $("q").focus(); });
  $("reference-similar").addEventListener("click", () => state.reference && similar(state.reference));
  $("more-button").addEventListener("click", showMore);
  $("refine-button").addEventListener("click", refine);
  $("undo-button").addEventListener("click", undo);
  $("back-button").addEventListener("click", back);
  $("keys-button").addEventListener("click", () => $("keys").showModal());
  $("close-button").addEventListener("click", closeViewer);
  $("prev-button").addEventListener("click", () => openViewer(state.viewerIndex - 1));
  $("next-button").addEventListener("click", () => openViewer(state.viewerIndex + 1));
  $("similar-button").addEventListener("click", () => { const ref = viewerItemRef(); if (ref) similar(ref); });
  $("likebut-button").addEventListener("click", () => {
    const ref = viewerItemRef();
    if (!ref) return;
    closeViewer();
    setReference(ref);
    $("q").value = "";
    say(`Reference set to ${ref.label}: type what should be different.`);
    $("q").focus();
  });
  $("viewer-relevant").addEventListener("click", () => mark(state.viewerIndex, true));
  $("viewer-irrelevant").addEventListener("click", () => mark(state.viewerIndex, false));
  $("viewer").addEventListener("close", () => { if (state.viewerIndex >= 0) focusCard(state.viewerIndex); });
  document.addEventListener("keydown", onKey);
  setMode(document.querySelector('input[name="mode"]:checked').value);
  const params = new URLSearchParams(location.search);
  if (params.get("q")) { $("q").value = params.get("q"); runSearch(); }
  loadStatus();
  document.body.dataset.ready = "true";
}

init();
