// One candidate at a time: y accept, n reject, u unsure, z undo; auto-advance.
"use strict";

const state = {labeler: null, queue: [], current: null, shownAt: 0, history: [], busy: false,
               decided: 0, exhausted: false};
const PREFETCH = 5;

function has(taskId) {
  return (state.current && state.current.task_id === taskId) ||
    state.queue.some((t) => t.task_id === taskId);
}

async function refill() {
  const data = await api(`/api/next?labeler=${encodeURIComponent(state.labeler)}&n=${PREFETCH}`);
  for (const task of data.tasks) if (!has(task.task_id)) state.queue.push(task);
  state.exhausted = data.tasks.length === 0;
}

function thumbs(id, urls) {
  const box = document.getElementById(id);
  box.replaceChildren(...urls.map((url) => el("img", {src: url, alt: "", loading: "lazy"})));
}

function show(task) {
  state.current = task || null;
  document.getElementById("main").hidden = !task;
  document.getElementById("empty").hidden = !!task;
  document.body.dataset.taskId = task ? String(task.task_id) : "";
  if (!task) return;
  const img = document.getElementById("candidate");
  img.classList.remove("small-source");
  img.onload = () => { if (img.naturalWidth < 160) img.classList.add("small-source"); };
  img.src = task.image_url;
  img.dataset.taskId = String(task.task_id);
  document.getElementById("score-value").textContent = task.score.toFixed(3);
  document.getElementById("category-name").textContent = task.category;
  document.getElementById("category-definition").textContent = task.category_definition || "";
  document.getElementById("round-info").textContent =
    `round ${task.round}` + (task.model_version ? `, model ${task.model_version}` : "");
  thumbs("exemplars", task.exemplar_urls);
  thumbs("neighbors", task.neighbor_urls || []);
  state.shownAt = performance.now();
}

async function advance() {
  if (state.queue.length < 2) await refill();
  show(state.queue.shift());
}

function ready() {
  state.busy = false;
  document.body.dataset.decided = String(state.decided);
  document.body.dataset.ready = "1";
  document.getElementById("session-count").textContent = `${state.decided} decided this session`;
}

async function decide(decision) {
  if (state.busy || !state.current) return;
  state.busy = true;
  document.body.dataset.ready = "0";
  const task = state.current;
  const seconds = (performance.now() - state.shownAt) / 1000;
  try {
    const result = await api("/api/decisions", {decisions: [
      {task_id: task.task_id, labeler: state.labeler, decision: decision, seconds: seconds}]});
    if (result.skipped && result.skipped.length) {
      // The task went to another labeler (this page's lease lapsed): move on.
      message(`Not recorded: ${result.skipped[0].reason}`);
    } else {
      state.history.push(task);
      state.decided += 1;
      message("");
    }
    await advance();
    if (state.decided % 10 === 0 || !state.current) showProgress();
  } catch (e) {
    message(`Not recorded: ${e.message}`);
  }
  ready();
}

async function undo() {
  if (state.busy || state.history.length === 0) return;
  state.busy = true;
  document.body.dataset.ready = "0";
  const task = state.history.pop();
  try {
    await api("/api/undo", {task_id: task.task_id, labeler: state.labeler});
    if (state.current) state.queue.unshift(state.current);
    state.decided -= 1;
    show(task);
    message("");
  } catch (e) {
    state.history.push(task);
    message(`Undo failed: ${e.message}`);
  }
  ready();
}

const KEYS = {y: () => decide("accept"), n: () => decide("reject"), u: () => decide("unsure"),
              z: undo, g: () => { location.href = "/grid"; },
              s: () => { location.href = "/status"; }};

document.addEventListener("keydown", (event) => {
  if (isTyping(event)) return;
  const action = KEYS[event.key.toLowerCase()];
  if (action) { event.preventDefault(); action(); }
});
document.getElementById("accept").onclick = () => decide("accept");
document.getElementById("reject").onclick = () => decide("reject");
document.getElementById("unsure").onclick = () => decide("unsure");
document.getElementById("undo").onclick = undo;

labelerName(async (name) => {
  state.labeler = name;
  try {
    await advance();
  } catch (e) {
    message(e.message);
  }
  showProgress();
  ready();
});
