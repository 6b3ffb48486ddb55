// keyart dashboard: polls the gateway's /dashboard/api endpoints and draws the
// posters of one video with their live numbers. Plain JavaScript, no build.
// Every text from the server goes through textContent, never innerHTML.
"use strict";

const params = new URLSearchParams(location.search);
const POLL_MS = Math.max(1000, Number(params.get("interval") || 3000));
const API = "dashboard/api";
const COLORS = ["#4ea1ff", "#3ecf8e", "#f5b642", "#ff6b6b", "#b58cff", "#2ed3d3",
                "#ff8fd0", "#9ccc65", "#ffa26b", "#8fa8ff"];
const state = {
  video: params.get("video") || "",
  placement: params.get("placement") || "", // whose shares the variants show
  lastVideo: null,
  videos: [],
  colors: new Map(),
  ctrHistory: new Map(), // poster id -> [[ms, ctr], ...] since the page opened
  token: sessionStorage.getItem("keyart-admin-token") || "",
  admin: false,
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

const pct = (x, digits = 2) => (x === null || x === undefined ? "–" : (100 * x).toFixed(digits) + "%");
const num = (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US"));
function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function colorOf(posterId) {
  if (!state.colors.has(posterId)) {
    state.colors.set(posterId, COLORS[state.colors.size % COLORS.length]);
  }
  return state.colors.get(posterId);
}
function pill(id, label, value, level) {
  const node = document.getElementById(id);
  node.className = "pill " + (level || "");
  node.replaceChildren(label + " ", el("b", {}, value));
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

// Videos ---------------------------------------------------------------------

function drawVideos() {
  const filter = document.getElementById("filter").value.toLowerCase();
  const list = document.getElementById("videos");
  const rows = state.videos.filter((v) => v.video_id.toLowerCase().includes(filter));
  list.replaceChildren(...rows.map((v) => el("div", {
    class: "video" + (v.video_id === state.video ? " selected" : ""),
    "data-video-id": v.video_id,
    onclick: () => selectVideo(v.video_id),
  }, el("div", { class: "id" }, v.video_id),
     el("div", { class: "meta" },
        `${v.posters} posters · ${num(v.impressions)} impressions · CTR ${pct(v.impressions ? v.clicks / v.impressions : null)}`))));
  if (!rows.length) list.replaceChildren(el("div", { class: "empty" }, "No videos yet."));
}

function selectVideo(videoId) {
  state.video = videoId;
  const url = new URL(location.href);
  url.searchParams.set("video", videoId);
  history.replaceState(null, "", url);
  drawVideos();
  refreshVideo();
}

// One video ------------------------------------------------------------------

function intervalBar(poster, scale) {
  const [low, high] = poster.interval;
  const left = (100 * low) / scale, width = Math.max(1, (100 * (high - low)) / scale);
  const bar = el("div", { class: "bar", title: `95% interval ${pct(low)} – ${pct(high)}` },
    el("div", { class: "fill", style: `left:${left}%;width:${width}%;background:${colorOf(poster.poster_id)}88` }));
  if (poster.window_ctr !== null) {
    bar.append(el("div", { class: "tick", style: `left:${(100 * poster.window_ctr) / scale}%` }));
  }
  return bar;
}

function sparkline(posterId) {
  const points = state.ctrHistory.get(posterId) || [];
  const box = svg("svg", { width: "100%", height: "26", viewBox: "0 0 200 26", preserveAspectRatio: "none" });
  if (points.length < 2) return box;
  const values = points.map((p) => p[1]);
  const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo;
  const yOf = (v) => (span ? 24 - (22 * (v - lo)) / span : 13);
  const path = points.map((p, i) => `${(200 * i) / (points.length - 1)},${yOf(p[1])}`);
  box.append(svg("polyline", { points: path.join(" "), fill: "none", stroke: colorOf(posterId), "stroke-width": "1.5" }));
  return box;
}

function posterCard(poster, scale) {
  const status = poster.status;
  const card = el("div", {
    class: "card " + status,
    "data-poster-id": poster.poster_id,
    "data-status": status,
    "data-ctr": poster.window_ctr ?? "",
    "data-alltime-ctr": poster.ctr ?? "",
  },
  el("div", { class: "img" },
    el("div", { class: "swatch", style: `background:${colorOf(poster.poster_id)}` }),
    poster.image_url ? el("img", { src: poster.image_url, alt: poster.poster_id, loading: "lazy" }) : el("span", { class: "note" }, "no image"),
    el("span", { class: "badge " + status }, status)),
  el("div", { class: "body" },
    el("div", { class: "pid" }, poster.poster_id),
    el("div", { class: "ctr", "data-field": "ctr" }, pct(poster.window_ctr),
       el("small", {}, "window CTR")),
    intervalBar(poster, scale),
    el("div", { class: "row" }, el("span", {}, "95% interval"),
       el("b", { "data-field": "interval" }, `${pct(poster.interval[0], 1)} – ${pct(poster.interval[1], 1)}`)),
    el("div", { class: "row" }, el("span", {}, "all-time CTR"),
       el("b", { "data-field": "alltime-ctr" }, pct(poster.ctr))),
    el("div", { class: "row" }, el("span", {}, "clicks / impressions"),
       el("b", { "data-field": "counts" }, `${num(poster.window_clicks)} / ${num(poster.window_impressions)}`)),
    el("div", { class: "row" }, el("span", {}, "traffic share (window)"),
       el("b", { "data-field": "share" }, pct(poster.window_share, 1))),
    sparkline(poster.poster_id),
    poster.retired_reason ? el("div", { class: "reason" }, "retired: " + poster.retired_reason) : null));
  return card;
}

function pendingCard(candidate) {
  const actions = state.admin ? el("div", { class: "actions" },
    el("button", { type: "button", onclick: () => review(candidate.poster_id, "approve") }, "Approve"),
    el("button", { type: "button", onclick: () => review(candidate.poster_id, "reject") }, "Reject")) : null;
  return el("div", { class: "card pending", "data-poster-id": candidate.poster_id, "data-status": "pending" },
    el("div", { class: "img" },
      candidate.image_url ? el("img", { src: candidate.image_url, alt: candidate.poster_id, loading: "lazy" }) : el("span", { class: "note" }, "no image"),
      el("span", { class: "badge pending" }, "pending review")),
    el("div", { class: "body" },
      el("div", { class: "pid" }, candidate.poster_id),
      el("div", { class: "row" }, el("span", {}, "score"), el("b", {}, Number(candidate.score).toFixed(3))),
      actions));
}

function drawHistory(history, posters) {
  const box = document.getElementById("history");
  const ids = posters.map((p) => p.poster_id).filter((id) => history.counts[id]);
  const all = history.bucket_ms;
  const allTotals = all.map((_, i) => ids.reduce((s, id) => s + history.counts[id][i], 0));
  if (!ids.length || allTotals.every((t) => t === 0)) {
    box.replaceChildren(el("div", { class: "empty" }, "No exposures recorded yet."));
    return;
  }
  // Start at the first bucket with exposures, showing at least six buckets.
  const start = Math.min(allTotals.findIndex((t) => t > 0), all.length - 6);
  const buckets = all.slice(start);
  const totals = allTotals.slice(start);
  const series = (id) => history.counts[id].slice(start);
  const W = 560, H = 170, L = 30, B = 18;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", "data-chart": "share" });
  const step = (W - L - 4) / buckets.length;
  const x = (i) => L + step * i;
  const y = (v) => 4 + (H - B - 4) * (1 - v);
  for (const v of [0, 0.5, 1]) {
    chart.append(svg("line", { x1: L, x2: W - 4, y1: y(v), y2: y(v), stroke: "#262c35" }));
    const label = svg("text", { x: 2, y: y(v) + 3 }); label.textContent = pct(v, 0); chart.append(label);
  }
  // One stacked column per bucket; a bucket without exposures stays empty.
  buckets.forEach((bucketMs, i) => {
    if (!totals[i]) return;
    let low = 0;
    for (const id of ids) {
      const share = series(id)[i] / totals[i];
      if (share > 0) {
        const rect = svg("rect", { x: x(i) + 1, width: Math.max(1, step - 2), y: y(low + share), height: y(low) - y(low + share), fill: colorOf(id), "data-poster-id": id });
        const tip = svg("title", {});
        tip.textContent = `${id}: ${pct(share, 1)} of ${totals[i]} impressions`;
        rect.append(tip);
        chart.append(rect);
      }
      low += share;
    }
  });
  const anchors = ["start", "middle", "end"];
  [0, Math.floor(buckets.length / 2), buckets.length - 1].forEach((i, n) => {
    const label = svg("text", { x: x(i) + (n === 0 ? 0 : n === 1 ? step / 2 : step), y: H - 4, "text-anchor": anchors[n] });
    label.textContent = new Date(buckets[i]).toISOString().slice(11, 16) + " UTC";
    chart.append(label);
  });
  box.replaceChildren(chart, el("div", { class: "legend" },
    ids.map((id) => el("span", {}, el("i", { style: `background:${colorOf(id)}` }), id))));
}

// Shares are per placement: only the posters the gateway can serve there, of
// the placement's aspect, compete for it.
function drawVariants(data) {
  const select = document.getElementById("placement");
  const names = data.placements.map((p) => p.name);
  if (select.dataset.names !== names.join(" ")) { // keep an open list open
    select.dataset.names = names.join(" ");
    select.replaceChildren(...data.placements.map((p) =>
      el("option", { value: p.name }, `${p.name} (${p.aspect})`)));
  }
  if (!names.includes(state.placement)) state.placement = names[0] || "";
  select.value = state.placement;
  select.hidden = !names.length;
  const posters = data.posters;
  const box = document.getElementById("variants");
  box.replaceChildren(...data.variants.map((v) => {
    const share = v.shares ? v.shares[state.placement] : null;
    const missing = v.shares ? "no poster can be served in any placement" : v.note;
    return el("div", { class: "variant", "data-variant": v.name, "data-placement": state.placement },
      el("h3", {}, v.name),
      el("div", { class: "sub", title: "posters this gateway chose for the variant since it started, every worker and every video" },
        `${v.policy} · weight ${v.weight} · ${num(v.decisions)} decisions, all videos`),
      share ? posters.filter((p) => p.poster_id in share).map((p) => el("div", { class: "share", "data-poster-id": p.poster_id },
        el("span", { class: "name", title: p.poster_id }, p.poster_id),
        el("div", { class: "bar" }, el("div", { class: "fill", style: `left:0;width:${100 * share[p.poster_id]}%;background:${colorOf(p.poster_id)}` })),
        el("span", { class: "v" }, pct(share[p.poster_id], 0))))
        : el("div", { class: "note" }, missing || "no active posters"));
  }));
  if (!data.variants.length) box.replaceChildren(el("div", { class: "note" }, "No experiment configured."));
}

function selectPlacement(name) {
  state.placement = name;
  const url = new URL(location.href);
  url.searchParams.set("placement", name);
  history.replaceState(null, "", url);
  if (state.lastVideo) drawVariants(state.lastVideo);
}

async function refreshVideo() {
  if (!state.video) return;
  const data = await getJSON(`${API}/videos/${encodeURIComponent(state.video)}`);
  if (data.video_id !== state.video) return;
  const now = data.generated_ms;
  for (const p of data.posters) {
    if (p.window_ctr === null) continue;
    const series = state.ctrHistory.get(p.poster_id) || [];
    series.push([now, p.window_ctr]);
    state.ctrHistory.set(p.poster_id, series.slice(-120));
  }
  document.getElementById("title").firstChild.textContent = data.video_id + " ";
  document.getElementById("subtitle").textContent =
    `${data.posters.length < data.posters_total ? `the ${data.posters.length} most shown of ${data.posters_total}` : data.posters.length} posters · state written ${seconds(data.state_age_s)} ago · prior Beta(${data.prior.join(", ")})`;
  const scale = Math.min(1, Math.max(0.02, ...data.posters.map((p) => p.interval[1])) * 1.1);
  const grid = document.getElementById("posters");
  grid.replaceChildren(...data.posters.map((p) => posterCard(p, scale)));
  if (!data.posters.length) grid.replaceChildren(el("div", { class: "empty" }, "This video has no posters yet."));
  drawHistory(data.history, data.posters);
  state.lastVideo = data;
  drawVariants(data);
  const pending = document.getElementById("pending");
  pending.replaceChildren(...data.pending.map(pendingCard));
  if (!data.pending.length) pending.replaceChildren(el("div", { class: "note" }, "Nothing waiting for review."));
  document.getElementById("pending-note").textContent = data.catalog_note;
}

// Operations -----------------------------------------------------------------

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map(([h, cls]) => el("th", { class: cls }, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map(([c, cls]) => el("td", { class: cls }, c))))));
}

async function refreshOps() {
  const ops = await getJSON(`${API}/ops`);
  const age = ops.worst_state_age_s;
  pill("freshness", "state age", seconds(age), age === null ? "" : age > 120 ? "bad" : age > 10 ? "warn" : "ok");
  const lagRows = ops.lag.rows;
  const worst = lagRows.reduce((m, r) => Math.max(m, r.lag_seconds || 0), 0);
  pill("lag", "worst lag", lagRows.length ? seconds(worst) : "–", worst > 300 ? "bad" : worst > 30 ? "warn" : "ok");
  pill("updated", "updated", new Date(ops.generated_ms).toISOString().slice(11, 19) + " UTC");
  const groups = new Map();
  for (const r of lagRows) {
    const key = r.group + "\u0000" + r.topic;
    const g = groups.get(key) || { group: r.group, topic: r.topic, lag: 0, seconds: 0, parts: 0 };
    g.lag += r.lag_messages; g.seconds = Math.max(g.seconds, r.lag_seconds || 0); g.parts += 1;
    groups.set(key, g);
  }
  document.getElementById("lag-note").textContent = ops.lag.error || "per group and topic";
  document.getElementById("lag-table").replaceChildren(groups.size ? table(
    [["group"], ["topic"], ["partitions", "num"], ["lag", "num"], ["oldest unprocessed", "num"]],
    [...groups.values()].map((g) => [[g.group], [g.topic], [g.parts, "num"], [num(g.lag), "num"], [seconds(g.seconds), "num"]]))
    : el("div", { class: "note" }, "No committed offsets yet."));
  const fresh = ops.freshness.filter((f) => f.age_s !== null);
  document.getElementById("fresh-table").replaceChildren(fresh.length ? table(
    [["partition"], ["state written", "num"]],
    fresh.map((f) => [[f.partition], [seconds(f.age_s) + " ago", "num"]]))
    : el("div", { class: "note" }, "No learner has written state yet."));
}

// Review (admin token) -------------------------------------------------------

async function unlock() {
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem("keyart-admin-token", state.token);
  await checkAdmin();
  refreshVideo();
}

async function checkAdmin() {
  state.admin = false;
  if (state.token) {
    const response = await fetch("admin/experiments", { headers: { Authorization: "Bearer " + state.token } });
    state.admin = response.ok;
  }
  const mode = document.getElementById("mode");
  mode.textContent = state.admin ? "review unlocked" : "read-only";
  mode.className = "pill " + (state.admin ? "ok" : "");
}

async function review(posterId, action) {
  let reason = "";
  if (action === "reject") {
    reason = prompt("Why reject " + posterId + "?") || "";
    if (!reason) return;
  }
  const response = await fetch(`admin/review/candidates/${encodeURIComponent(posterId)}/${action}`, {
    method: "POST",
    headers: { Authorization: "Bearer " + state.token, "Content-Type": "application/json" },
    body: JSON.stringify({ reviewer: "dashboard", reason }),
  });
  if (!response.ok) alert(`${action} ${posterId}: HTTP ${response.status}`);
  refreshVideo();
}

// Loop -----------------------------------------------------------------------

async function tick() {
  try {
    state.videos = (await getJSON(`${API}/videos`)).videos;
    if (!state.video && state.videos.length) state.video = state.videos[0].video_id;
    drawVideos();
    await Promise.all([refreshVideo(), refreshOps()]);
    document.body.dataset.loaded = "1";
  } catch (error) {
    pill("updated", "error", error.message, "bad");
  }
}

document.getElementById("filter").addEventListener("input", drawVideos);
document.getElementById("placement").addEventListener("change", (e) => selectPlacement(e.target.value));
document.getElementById("unlock").addEventListener("click", unlock);
document.getElementById("token").value = state.token;
checkAdmin().finally(() => { tick(); setInterval(tick, POLL_MS); });
