// Shared by the labelling pages: the JSON API and the labeler's name.
"use strict";

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, Object.assign({credentials: "same-origin"}, options));
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
  }
  return data;
}

// The labeler's name: ?labeler=NAME (kept), else localStorage, else asked for.
function labelerName(onReady) {
  const fromUrl = new URLSearchParams(location.search).get("labeler");
  if (fromUrl) localStorage.setItem("labeler", fromUrl.trim());
  const name = localStorage.getItem("labeler");
  if (name) { showLabeler(name); onReady(name); return; }
  const dialog = document.getElementById("name-dialog");
  const form = document.getElementById("name-form");
  dialog.hidden = false;
  document.getElementById("name-input").focus();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("name-input").value.trim();
    if (!value) return;
    localStorage.setItem("labeler", value);
    dialog.hidden = true;
    showLabeler(value);
    onReady(value);
  });
}

function showLabeler(name) {
  const el = document.getElementById("labeler");
  if (el) el.textContent = name;
  const change = document.getElementById("change-name");
  if (change) change.onclick = () => { localStorage.removeItem("labeler"); location.search = ""; };
}

function message(text) {
  document.getElementById("message").textContent = text || "";
}

function isTyping(event) {
  const tag = (event.target && event.target.tagName) || "";
  return tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" ||
    event.ctrlKey || event.metaKey || event.altKey;
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Progress of the latest round that is not closed: one bar per category.
async function showProgress() {
  const box = document.getElementById("progress");
  if (!box) return;
  let status;
  try { status = await api("/api/status"); } catch (e) { return; }
  const rounds = status.rounds.filter((r) => r.status !== "closed");
  const round = rounds.length ? rounds[rounds.length - 1] : status.rounds[status.rounds.length - 1];
  box.replaceChildren();
  if (!round) { box.textContent = "no round yet"; return; }
  box.appendChild(el("span", {}, `round ${round.index} (${round.status}): ` +
    `${round.tasks - round.pending}/${round.tasks} decided`));
  for (const [name, c] of Object.entries(round.categories)) {
    const done = c.tasks - c.pending;
    const item = el("span", {"class": "category-progress", "data-category": name});
    const bar = el("span", {"class": "bar"});
    const fill = el("span");
    fill.style.width = `${c.tasks ? (100 * done / c.tasks) : 0}%`;
    bar.appendChild(fill);
    item.append(`${name} `, bar, ` ${done}/${c.tasks}`);
    box.appendChild(item);
  }
}
