// The explanation panel: how the request was understood and why each result is where it is.
// Everything is built with textContent: paths, captions and model output are never parsed as HTML.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const basename = (path) => String(path || "").split("/").pop();
const fmt = (x, digits = 3) => (typeof x === "number" ? x.toFixed(digits) : x === null || x === undefined ? "" : String(x));

function section(title, ...content) {
  return el("section", { class: "explain-section" }, el("h3", { text: title }), ...content);
}

// Before the next search runs: what it will be (so the panel never describes a request that is no longer current).
export function renderPendingExplanation(target, lines) {
  target.replaceChildren(el("div", { class: "pending" }, el("h3", { text: "Next search" }),
    ...lines.map((line) => el("p", { text: line }))));
}

export function renderSearchExplanation(target, response, referenceLabel = null) {
  const ex = response.explanation || {};
  const parts = [];
  const meta = [`pipeline: ${response.pipeline}`];
  if (response.stages && response.stages.length) meta.push(`stages run: ${response.stages.join(", ")}`);
  if (response.model_calls) meta.push(`${response.model_calls} model calls`);
  meta.push(`${fmt(response.seconds, 2)} s`);
  parts.push(el("p", { class: "dim", text: meta.join(" · ") }));

  const req = ex.request || {};
  if (req.reference || ex.reference) {
    const ref = req.reference || ex.reference;
    const source = ref.source || (ref.id ? `library id ${ref.id}` : "an uploaded photo");
    parts.push(section("Reference photo", el("p", { class: "reference-name", text: referenceLabel ? `${referenceLabel} (${source})` : source }),
      req.reference_caption ? el("p", { class: "dim", text: `seen as: ${req.reference_caption}` }) : null));
  }
  if (req.turns && req.turns.length) {
    parts.push(section("Dialogue", el("ul", {}, req.turns.map((t) => el("li", { text: t })))));
  }
  const intent = ex.intent;
  if (intent && Array.isArray(intent.descriptions)) {
    const names = ["core", "detailed", "full"];
    parts.push(section(`Rewritten query (${intent.source || "stage 1"})`,
      el("ul", { class: "rewritten" }, intent.descriptions.map((d, i) => el("li", {}, el("strong", { text: `${names[i] || i + 1}: ` }), d))),
      (intent.operations || []).length ? el("p", { class: "dim", text: "operations: " + intent.operations.map((o) => `${o.kind}: ${o.text}`).join("; ") }) : null));
  } else if (ex.query_text) {
    parts.push(section("Query sent to the encoder", el("p", { class: "rewritten" }, el("q", { text: ex.query_text }))));
  }
  const props = (ex.propositions && ex.propositions.items) || [];
  if (props.length) {
    parts.push(section(`Propositions (${ex.propositions.source || "stage 2"})`,
      el("ol", {}, props.map((p) => el("li", { text: `${p.question} → expected ${p.expected ? "yes" : "no"}${p.reference ? " (vs. the reference)" : ""}` })))));
  }
  const cands = ex.candidates || [];
  if (cands.length) {
    const hasS2 = cands.some((c) => c.stage2);
    const hasS3 = cands.some((c) => c.stage3);
    const head = el("tr", {}, el("th", { scope: "col", text: "rank" }), el("th", { scope: "col", text: "photo" }),
      el("th", { scope: "col", text: "stage 1" }), hasS2 ? el("th", { scope: "col", text: "stage 2 answers (P yes)" }) : null,
      hasS3 ? el("th", { scope: "col", text: "judge" }) : null);
    const rows = cands.slice(0, 30).map((c) => {
      const r = c.ranks || {};
      const s1 = c.stage1 || {};
      const stageRanks = ["stage1", "stage2", "stage3"].filter((s) => r[s] !== undefined).map((s) => `${s.replace("stage", "s")}#${r[s]}`).join(" ");
      return el("tr", {},
        el("td", { text: String(r.final ?? "") }),
        el("td", { text: basename(c.path) }),
        el("td", { text: [s1.score !== undefined ? fmt(s1.score) : "", stageRanks].filter(Boolean).join(" · ") }),
        hasS2 ? el("td", { text: c.stage2 ? (c.stage2.p_yes || []).map((p, i) => `Q${i + 1}:${fmt(p, 2)}`).join(" ") : "" }) : null,
        hasS3 ? el("td", { text: c.stage3 ? `${fmt(c.stage3.judge, 2)} ${c.stage3.reason || ""}` : "" }) : null);
    });
    parts.push(section("Ranks", el("div", { class: "table-wrap" }, el("table", {}, el("caption", { class: "visually-hidden", text: "Stage scores and ranks of the results" }), el("thead", {}, head), el("tbody", {}, rows)))));
  }
  const skipped = ex.skipped || {};
  if (Object.keys(skipped).length) {
    parts.push(section("Skipped", el("ul", {}, Object.entries(skipped).map(([s, why]) => el("li", { text: `${s}: ${why}` })))));
  }
  for (const note of ex.notes || []) parts.push(el("p", { class: "note", text: `note: ${note}` }));
  target.replaceChildren(...parts);
}

export function renderSessionExplanation(target, session) {
  const history = session.history || [];
  const parts = [
    el("p", { class: "dim", text: `session ${session.id} · feedback: ${session.strategy} · ${session.shown} photos shown so far` }),
    section("Rewritten query", el("p", { class: "rewritten" }, el("q", { text: session.current_query }))),
    section("Rounds", el("ol", { start: "0", class: "history" }, history.map((h) =>
      el("li", {}, el("q", { text: h.query }), " ", el("span", { class: "dim", text: `— ${h.why}` }),
        h.fallback ? el("span", { class: "note", text: ` (${h.fallback})` }) : null)))),
  ];
  if ((session.negative_propositions || []).length) {
    parts.push(section("Expected false", el("ul", {}, session.negative_propositions.map((p) => el("li", { text: p })))));
  }
  if (session.strategy_error) parts.push(el("p", { class: "note", text: `note: ${session.strategy_error}` }));
  target.replaceChildren(...parts);
}
