// A page of one category's candidates: mark the wrong ones, then one key decides the page.
"use strict";

const grid = {labeler: null, tasks: [], marked: new Set(), focus: 0, shownAt: 0, busy: false};

function tiles() { return Array.from(document.querySelectorAll("#grid .tile")); }

function render() {
  const box = document.getElementById("grid");
  box.replaceChildren();
  grid.tasks.forEach((task, i) => {
    const tile = el("div", {"class": "tile", "data-task-id": String(task.task_id),
                            "data-index": String(i)});
    tile.appendChild(el("img", {src: task.image_url, alt: ""}));
    tile.appendChild(el("div", {"class": "tile-score"}, `score ${task.score.toFixed(3)}`));
    tile.onclick = () => { grid.focus = i; toggle(i); };
    box.appendChild(tile);
  });
  document.getElementById("empty").hidden = grid.tasks.length > 0;
  const first = grid.tasks[0];
  document.getElementById("category-definition").textContent =
    first ? first.category_definition || "" : "";
  paint();
  grid.shownAt = performance.now();
  document.body.dataset.pageTasks = grid.tasks.map((t) => t.task_id).join(",");
}

function paint() {
  tiles().forEach((tile, i) => {
    tile.classList.toggle("selected", grid.marked.has(grid.tasks[i].task_id));
    tile.classList.toggle("focused", i === grid.focus);
  });
}

function toggle(i) {
  const id = grid.tasks[i] && grid.tasks[i].task_id;
  if (id === undefined) return;
  if (grid.marked.has(id)) grid.marked.delete(id); else grid.marked.add(id);
  paint();
}

function columns() {
  const all = tiles();
  if (all.length < 2) return 1;
  const top = all[0].offsetTop;
  const n = all.findIndex((t) => t.offsetTop !== top);
  return n === -1 ? all.length : n;
}

async function load(notice) {
  const category = document.getElementById("category").value;
  const n = document.getElementById("page-size").value;
  if (!category) return;
  document.body.dataset.ready = "0";
  try {
    const data = await api(`/api/next?labeler=${encodeURIComponent(grid.labeler)}&n=${n}` +
                           `&category=${encodeURIComponent(category)}`);
    grid.tasks = data.tasks;
    grid.marked = new Set();
    grid.focus = 0;
    render();
    message(notice || "");
  } catch (e) {
    message(e.message);
  }
  showProgress();
  document.body.dataset.ready = "1";
}

async function submit(rejectAll) {
  if (grid.busy || grid.tasks.length === 0) return;
  grid.busy = true;
  const seconds = (performance.now() - grid.shownAt) / 1000 / grid.tasks.length;
  const decisions = grid.tasks.map((task) => ({
    task_id: task.task_id, labeler: grid.labeler, seconds: seconds,
    decision: rejectAll || grid.marked.has(task.task_id) ? "reject" : "accept"}));
  try {
    const result = await api("/api/decisions", {decisions: decisions});
    document.body.dataset.recorded = String(result.recorded);
    const skipped = (result.skipped || []).length;
    await load(skipped ? `${skipped} of ${decisions.length} not recorded: the tasks had ` +
                         "gone to other labelers (their leases lapsed)" : "");
  } catch (e) {
    message(`Not recorded: ${e.message}`);
  }
  grid.busy = false;
}

document.addEventListener("keydown", (event) => {
  if (isTyping(event)) return;
  const key = event.key;
  const moves = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns()};
  if (key in moves) {
    grid.focus = Math.max(0, Math.min(grid.tasks.length - 1, grid.focus + moves[key]));
    paint();
  } else if (key === " ") {
    toggle(grid.focus);
  } else if (key === "Enter") {
    submit(false);
  } else if (key === "b") {
    submit(true);
  } else if (key === "c") {
    grid.marked = new Set(); paint();
  } else if (key === "o") {
    location.href = "/";
  } else if (key === "s") {
    location.href = "/status";
  } else {
    return;
  }
  event.preventDefault();
});
document.getElementById("submit").onclick = () => submit(false);
document.getElementById("reject-all").onclick = () => submit(true);
document.getElementById("clear").onclick = () => { grid.marked = new Set(); paint(); };
document.getElementById("category").onchange = () => load();
document.getElementById("page-size").onchange = () => load();

labelerName(async (name) => {
  grid.labeler = name;
  try {
    const status = await api("/api/status");
    const select = document.getElementById("category");
    const wanted = new URLSearchParams(location.search).get("category");
    for (const c of status.categories) {
      const option = el("option", {value: c.name}, c.name);
      if (c.name === wanted) option.selected = true;
      select.appendChild(option);
    }
  } catch (e) {
    message(e.message);
  }
  await load();
});
