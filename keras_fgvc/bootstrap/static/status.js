// The status page: counts, selection quality, labelers, agreement; refreshed every 10 s.
"use strict";

function table(id, head, rows) {
  const t = document.getElementById(id);
  t.replaceChildren();
  const tr = el("tr");
  head.forEach((h) => tr.appendChild(el("th", {}, h)));
  t.appendChild(tr);
  rows.forEach((row) => {
    const r = el("tr");
    row.forEach((cell) => r.appendChild(el("td", {}, cell === null || cell === undefined ? "-" :
                                                        String(cell))));
    t.appendChild(r);
  });
  if (rows.length === 0) {
    const r = el("tr");
    const td = el("td", {colspan: String(head.length), "class": "muted"}, "none yet");
    r.appendChild(td);
    t.appendChild(r);
  }
}

function pct(p) {
  if (!p || p.value === null) return `n/a (${p && p.reason ? p.reason + ", " : ""}n=${p ? p.n : 0})`;
  const f = (x) => (100 * x).toFixed(1);
  const count = p.k === undefined ? `n=${p.n}` : `${p.k}/${p.n}`;  // a ratio has no k
  return `${f(p.value)}% [${f(p.low)}, ${f(p.high)}] (${count})`;
}

async function refresh() {
  let status, quality;
  try {
    [status, quality] = await Promise.all([api("/api/status"), api("/api/quality")]);
  } catch (e) {
    message(e.message);
    return;
  }
  message("");
  table("categories", ["category", "index", "seed", "positives (S)", "hard negatives (H)",
                       "definition"],
        status.categories.map((c) => [c.name, c.index, c.seed, c.positives, c.hard_negatives,
                                      c.definition]));
  const box = document.getElementById("rounds");
  box.replaceChildren();
  for (const round of status.rounds) {
    box.appendChild(el("h3", {}, `Round ${round.index}: ${round.status}` +
                       (round.model_version ? `, model ${round.model_version}` : "") +
                       ` (${round.leased} leased now)`));
    const id = `round-${round.index}`;
    box.appendChild(el("table", {id: id}));
    const rows = Object.entries(round.categories).map(([name, c]) =>
      [name, c.tasks, c.pending, c.accepted, c.rejected, c.unsure]);
    rows.push(["all", round.tasks, round.pending, round.accepted, round.rejected, round.unsure]);
    table(id, ["category", "tasks", "pending", "accepted", "rejected", "unsure"], rows);
  }
  const qrows = [];
  // Corrected for labeler errors where gold items were decided (else "no gold items").
  const fixed = (q, c, key) => q.labeler_error ? pct(c[key]) : "no gold items";
  for (const q of quality.rounds) {
    const bound = q.overall.recall_method === "probes" ? "" : " (upper bound)";
    qrows.push([`round ${q.round} (all)`, pct(q.overall.precision),
                pct(q.overall.recall) + bound,
                fixed(q, q.overall, "precision_corrected"),
                fixed(q, q.overall, "recall_corrected"),
                pct(q.overall.selected_acceptance), q.overall.uniform_decided]);
    for (const [name, c] of Object.entries(q.categories)) {
      qrows.push([`round ${q.round} ${name}`, pct(c.precision), pct(c.recall),
                  fixed(q, c, "precision_corrected"), fixed(q, c, "recall_corrected"),
                  pct(c.selected_acceptance), c.uniform_decided]);
    }
  }
  table("quality", ["round / category", "precision", "recall",
                    "precision, corrected by gold", "recall, corrected by gold",
                    "acceptance of all selected", "uniform sample decided"], qrows);
  const labelers = Object.keys(status.labelers).map((name) => {
    const g = quality.gold[name];
    return [name, status.labelers[name], g ? pct(g) : "no gold items"];
  });
  table("labelers", ["labeler", "decisions", "accuracy on gold items"], labelers);
  table("agreement", ["labelers", "tasks", "observed agreement", "kappa"],
        quality.agreement.pairs.map((p) => [p.labelers.join(" / "), p.n,
                                            (100 * p.observed_agreement).toFixed(1) + "%",
                                            p.kappa === null ? "undefined" : p.kappa.toFixed(3)]));
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}` +
    ` (overlap ${quality.overlap})`;
  document.body.dataset.ready = "1";
}

document.addEventListener("keydown", (event) => {
  if (isTyping(event)) return;
  if (event.key === "o") location.href = "/";
  if (event.key === "g") location.href = "/grid";
});
refresh();
setInterval(refresh, 10000);
