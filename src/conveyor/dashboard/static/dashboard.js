// conveyor dashboard: polls /api/overview every 2 s and draws it. No libraries, no network
// beyond this server; every value goes into the page as text, never as HTML.
"use strict";

const POLL_MS = 2000;
// Bottom to top in the stacked chart: finished work at the base, work in progress on top.
const STACK = ["succeeded", "failed", "cancelled", "retrying", "running", "queued"];
const FINISHED = ["succeeded", "failed", "cancelled"];
const COLORS = {
  queued: "#8795a8",
  running: "#2f7ae5",
  retrying: "#e8a317",
  succeeded: "#16a37a",
  failed: "#e0474c",
  cancelled: "#6b5b95",
};
const FINISHED_GROUP = ["succeeded", "failed"];
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

function rate(perS) {
  if (perS === null || perS === undefined) return "–";
  return perS >= 10 ? perS.toFixed(0) : perS >= 1 ? perS.toFixed(1) : perS.toFixed(2);
}

function clock(epochS, withSeconds = true) {
  const d = new Date(epochS * 1000);
  const pad = (v) => String(v).padStart(2, "0");
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return withSeconds ? `${hm}:${pad(d.getSeconds())}` : hm;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function setText(id, text) {
  const el = $(id);
  if (el) el.textContent = text;
}

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}

// A job's source file: its name, with the path as given at submit in the tooltip.
function sourceCell(source) {
  const name = source ? source.split("/").pop() : "";
  return el("td", { class: "source", title: source || "" }, name);
}

function jobLink(jobId) {
  if (!jobId) return el("span", {}, "?");
  const a = el("a", { href: `/jobs/${encodeURIComponent(jobId)}`, class: "mono" }, jobId);
  return a;
}

// --- the numbers ---------------------------------------------------------------------------

function renderCards(data) {
  const s = data.summary;
  for (const state of STACK) {
    setText(`count-${state}`, fmt(s.counts[state]));
    const share = s.total ? Math.round((100 * s.counts[state]) / s.total) : 0;
    setText(`share-${state}`, s.total ? `${share}% of jobs` : "");
  }
  setText("total", fmt(s.total));
  setText("rate-minute", rate(s.rate_last_minute_per_s));
  setText("rate-overall", rate(s.rate_overall_per_s));
  setText("finished-minute", fmt(s.finished_last_minute));
  setText("oldest-queued", age(s.oldest_queued_age_s));
  const q = data.queue;
  const parts = ["pending", "visible", "in_flight", "delayed", "dead_lettered"];
  for (const key of parts) {
    setText(`queue-${key.replace("_", "-")}`, q.error ? "?" : fmt(q[key]));
  }
  setText("where", `ledger ${data.ledger_url} · queue ${data.queue_url}`);
  const note = $("note");
  note.hidden = !data.note;
  note.textContent = data.note ? `The ledger is empty: ${data.note}.` : "";
  const requests = $("requests");
  requests.replaceChildren();
  const kinds = Object.keys(s.queue_requests).sort();
  if (!kinds.length) requests.append(el("span", { class: "empty" }, "No worker has reported yet."));
  for (const kind of kinds) {
    const pair = el("div");
    pair.append(el("dt", {}, kind), el("dd", { "data-kind": kind }, fmt(s.queue_requests[kind])));
    requests.append(pair);
  }
}

function renderFailures(data) {
  const body = $("failures");
  body.replaceChildren();
  for (const f of data.summary.recent_failures) {
    const row = el("tr", { "data-job-id": f.job_id });
    const link = el("td");
    link.append(jobLink(f.job_id));
    row.append(
      el("td", { class: "when", title: new Date(f.failed_at * 1000).toISOString() }, clock(f.failed_at)),
      link,
      sourceCell(f.source),
      el("td", {}, f.task || "?"),
      el("td", { class: "reason" }, f.error || ""),
    );
    body.append(row);
  }
  $("failures-empty").hidden = data.summary.recent_failures.length > 0;

  // The first page of dead letters comes with every poll; older pages on request.
  if (!deadPaged) {
    $("dead-letters").replaceChildren();
    appendDeadLetters(data.dead_letters.messages);
    deadNext = data.dead_letters.next;
    $("dead-letters-more").hidden = !deadNext;
  }
  const empty = $("dead-letters-empty");
  empty.hidden = data.dead_letters.messages.length > 0;
  if (data.dead_letters.error) {
    empty.hidden = false;
    empty.textContent = `Dead-letter queue unavailable: ${data.dead_letters.error}`;
  } else {
    empty.textContent = "The dead-letter queue is empty.";
  }
}

function appendDeadLetters(messages) {
  const dead = $("dead-letters");
  for (const d of messages) {
    const row = el("tr", { "data-job-id": d.job_id || "", "data-message-id": d.message_id });
    const link = el("td");
    link.append(jobLink(d.job_id));
    row.append(link, el("td", {}, d.task || "?"), el("td", {}, fmt(d.receive_count)),
      el("td", { class: "reason" }, d.reason || ""));
    dead.append(row);
  }
}

// --- lists that page: jobs by state, groups, older dead letters ----------------------------

let jobsNext = null;
let jobsPaged = false;
let deadNext = null;
let groupsNext = null;
let groupsPaged = false;
let deadPaged = false;

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function jobRow(job) {
  const row = el("tr", { "data-job-id": job.job_id, "data-state": job.state });
  const link = el("td");
  link.append(jobLink(job.job_id));
  const badge = el("span", { class: `badge badge-${job.state}` }, job.state);
  const state = el("td");
  state.append(badge);
  row.append(
    el("td", { class: "when", title: new Date(job.updated_at * 1000).toISOString() }, clock(job.updated_at)),
    link,
    sourceCell(job.source),
    el("td", {}, job.task || "?"),
    state,
    el("td", {}, fmt(job.attempts)),
  );
  return row;
}

// Loads a page of jobs: the first (replacing the list) or the next one (appended).
async function loadJobs(next) {
  const params = new URLSearchParams({ limit: "25" });
  const state = $("jobs-state").value;
  if (state) params.set("state", state);
  if (next) params.set("before", next);
  const page = await getJson(`/api/jobs?${params}`);
  const body = $("jobs");
  if (!next) body.replaceChildren();
  for (const job of page.jobs) body.append(jobRow(job));
  jobsNext = page.next;
  $("jobs-more").hidden = !jobsNext;
  $("jobs-empty").hidden = body.children.length > 0;
}

// A group's row: done/failed/running/queued of its K jobs, its pace and why it failed.
function groupRow(group) {
  const row = el("tr", { "data-group-id": group.group_id, "data-state": group.state });
  const badge = el("span", { class: `badge badge-${group.state}` }, group.state);
  const state = el("td");
  state.append(badge);
  const c = group.counts;
  const running = (c.running || 0) + (c.retrying || 0);
  row.append(
    el("td", { class: "when", title: new Date(group.created_at * 1000).toISOString() }, clock(group.created_at)),
    el("td", { class: "mono", title: group.source || "" }, group.group_id),
    state,
    el("td", { "data-field": "done" }, `${fmt(group.done)} of ${fmt(group.total)}`),
    el("td", { "data-field": "failed" }, fmt(group.failures)),
    el("td", { "data-field": "running" }, fmt(running)),
    el("td", { "data-field": "queued" }, fmt(c.queued)),
    el("td", { "data-field": "throughput" }, rate(group.throughput_per_s)),
    el("td", { "data-field": "time-left" }, FINISHED_GROUP.includes(group.state) ? "–" : age(group.time_left_s)),
    el("td", { class: "reason" }, group.reason || ""),
  );
  return row;
}

// Loads a page of groups: the first (replacing the list) or the next one (appended).
async function loadGroups(next) {
  const params = new URLSearchParams({ limit: "25" });
  if (next) params.set("before", next);
  const page = await getJson(`/api/groups?${params}`);
  const body = $("groups");
  if (!next) body.replaceChildren();
  for (const group of page.groups) body.append(groupRow(group));
  groupsNext = page.next;
  $("groups-more").hidden = !groupsNext;
  $("groups-empty").hidden = body.children.length > 0;
}

async function loadOlderDeadLetters() {
  const params = new URLSearchParams({ limit: "50", before: deadNext });
  const page = await getJson(`/api/dead-letters?${params}`);
  deadPaged = true;  // the poll stops replacing the list the reader is paging through
  appendDeadLetters(page.messages);
  deadNext = page.next;
  $("dead-letters-more").hidden = !deadNext;
}

// --- the charts ----------------------------------------------------------------------------

// Round axis steps (1, 2 or 5 times a power of ten) so the grid lines read well.
function axis(max, integers) {
  const target = Math.max(max, integers ? 1 : 1e-9) / 4;
  const power = 10 ** Math.floor(Math.log10(target));
  let step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= target);
  if (integers) step = Math.max(1, Math.round(step));
  return { step, top: Math.max(step, Math.ceil(max / step - 1e-9) * step) };
}

// A frame with y grid lines and time labels; returns helpers to place points in it.
function frame(root, t, max, integers, title) {
  const width = Math.max(320, root.clientWidth || 800);
  const height = Math.max(100, root.clientHeight || 200);
  const pad = { left: 46, right: 12, top: 8, bottom: 20 };
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const x0 = t.times[0];
  const span = Math.max(1e-9, t.times[t.times.length - 1] - x0);
  const { step, top } = axis(max, integers);
  const x = (time) => pad.left + ((time - x0) / span) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  for (let v = 0; v <= top + step / 2; v += step) {
    chart.append(svg("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }));
    const label = integers ? fmt(Math.round(v)) : String(Number(v.toPrecision(3)));
    chart.append(svg("text", { class: "axis", x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" }, label));
  }
  const ticks = Math.min(6, t.times.length - 1);
  for (let i = 0; i <= ticks; i += 1) {
    const time = x0 + (span * i) / Math.max(1, ticks);
    const anchor = i === 0 ? "start" : i === ticks ? "end" : "middle";
    chart.append(svg("text", { class: "axis", x: x(time), y: height - 5, "text-anchor": anchor },
      clock(time, t.bucket_s < 60)));
  }
  chart.append(svg("title", {}, title));
  return { chart, x, y, height, pad };
}

function drawStates(t) {
  const root = $("chart-states");
  const n = t.times.length;
  const totals = t.times.map((_, i) => STACK.reduce((sum, s) => sum + t.states[s][i], 0));
  const { chart, x, y, height, pad } = frame(root, t, Math.max(...totals, 1), true, "jobs by state");
  const below = new Array(n).fill(0);
  for (const state of STACK) {
    const values = t.states[state];
    const above = below.map((b, i) => b + values[i]);
    if (values.some((v) => v > 0)) {
      const top = t.times.map((time, i) => `${x(time).toFixed(1)},${y(above[i]).toFixed(1)}`);
      const bottom = t.times.map((time, i) => `${x(time).toFixed(1)},${y(below[i]).toFixed(1)}`);
      chart.append(svg("polygon", {
        points: [...top, ...bottom.reverse()].join(" "),
        fill: COLORS[state],
        "fill-opacity": 0.85,
        "data-state": state,
      }));
    }
    for (let i = 0; i < n; i += 1) below[i] = above[i];
  }
  const cursor = svg("line", { class: "cursor", y1: pad.top, y2: height - pad.bottom, visibility: "hidden" });
  chart.append(cursor);
  chart.addEventListener("mousemove", (event) => {
    const box = chart.getBoundingClientRect();
    const px = (event.clientX - box.left) * (chart.viewBox.baseVal.width / box.width);
    let best = 0;
    for (let i = 1; i < n; i += 1) if (Math.abs(x(t.times[i]) - px) < Math.abs(x(t.times[best]) - px)) best = i;
    cursor.setAttribute("x1", x(t.times[best]));
    cursor.setAttribute("x2", x(t.times[best]));
    cursor.setAttribute("visibility", "visible");
    const parts = [...STACK].reverse().map((s) => `${s} ${fmt(t.states[s][best])}`);
    setText("readout", `${clock(t.times[best])} — ${parts.join(" · ")}`);
  });
  chart.addEventListener("mouseleave", () => {
    cursor.setAttribute("visibility", "hidden");
    setText("readout", "\u00a0");
  });
  root.replaceChildren(chart);
}

function drawThroughput(t) {
  const root = $("chart-throughput");
  const buckets = t.times.length - 1;
  const perS = (state, i) => t.finished[state][i] / t.bucket_s;
  const total = (i) => FINISHED.reduce((sum, state) => sum + perS(state, i), 0);
  const peak = Math.max(0, ...t.finished.succeeded.map((_, i) => total(i)));
  const { chart, x, y } = frame(root, t, peak || 1, false, "jobs finished per second");
  for (let i = 0; i < buckets; i += 1) {
    const left = x(t.times[i]);
    const w = Math.max(1, x(t.times[i + 1]) - left - 1);
    let base = 0;
    for (const state of FINISHED) {
      const v = perS(state, i);
      if (v > 0) {
        chart.append(svg("rect", {
          x: left.toFixed(1), width: w.toFixed(1), y: y(base + v).toFixed(1),
          height: (y(base) - y(base + v)).toFixed(1), fill: COLORS[state], "data-state": state,
        }));
      }
      base += v;
    }
  }
  root.replaceChildren(chart);
}

function renderLegend() {
  const legend = $("legend");
  for (const state of [...STACK].reverse()) legend.append(el("span", { class: `key ${state}` }, state));
}

// --- the loop ------------------------------------------------------------------------------

let lastData = null;

function render(data) {
  lastData = data;
  renderCards(data);
  renderFailures(data);
  drawStates(data.timeline);
  drawThroughput(data.timeline);
  const t = data.timeline;
  const span = t.times[t.times.length - 1] - t.times[0];
  setText("chart-span", t.narrowed ? `(busy: the last ${age(span)} only)` : "");
  document.body.dataset.generatedAt = String(data.generated_at);
}

function setLive(ok, message) {
  const live = $("live");
  live.classList.toggle("ok", ok);
  live.classList.toggle("down", !ok);
  const banner = $("error");
  banner.hidden = ok;
  if (ok) {
    setText("updated", `updated ${clock(Date.now() / 1000)}`);
  } else {
    setText("updated", "offline");
    banner.textContent = `Cannot refresh: ${message}`;
  }
}

async function poll() {
  try {
    const data = await getJson("/api/overview");
    render(data);
    if (!jobsPaged) await loadJobs(null);
    if (!groupsPaged) await loadGroups(null);
    setLive(true);
  } catch (error) {
    setLive(false, error.message);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

window.addEventListener("resize", () => {
  if (lastData) {
    drawStates(lastData.timeline);
    drawThroughput(lastData.timeline);
  }
});

$("jobs-state").addEventListener("change", () => {
  jobsPaged = false;
  loadJobs(null).catch((error) => setLive(false, error.message));
});
$("jobs-more").addEventListener("click", () => {
  jobsPaged = true;
  loadJobs(jobsNext).catch((error) => setLive(false, error.message));
});
$("groups-more").addEventListener("click", () => {
  groupsPaged = true;
  loadGroups(groupsNext).catch((error) => setLive(false, error.message));
});
$("dead-letters-more").addEventListener("click", () => {
  loadOlderDeadLetters().catch((error) => setLive(false, error.message));
});

renderLegend();
poll();
