/* SPDX-License-Identifier: MIT */
/* The ConspiracyOS status page: renders the state con-webd pushes as Server-Sent Events
 * (/api/events, event "state"). Everything is drawn with DOM calls and textContent: no markup is
 * built from data, no inline script or style (the page's CSP forbids both). */
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fdf", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0b7285", "#c2255c", "#5c940d"];

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function num(v) { return el("td", v === undefined || v === null ? "–" : String(v), "num"); }

function time(usec) {
  if (!usec) return "";
  return new Date(usec / 1000).toISOString().replace("T", " ").slice(0, 19);
}

function fillBody(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows);
}

function stateClass(s) {
  if (s === "idle" || s === "busy") return "ok";
  if (s === "halted" || s === "quarantined" || s === "down") return "bad";
  return "warn";
}

function renderAgents(st) {
  const rows = st.agents.map(a => {
    const tr = el("tr");
    tr.dataset.agent = a.name;
    tr.append(el("td", a.name), el("td", a.tier || "–"), el("td", a.mode),
              el("td", a.running ? a.state : "down", stateClass(a.running ? a.state : "down")),
              num(a.queue), el("td", a.current_task || "–"), num(a.accepted), num(a.completed), num(a.failed));
    const u = a.usage || {};
    tr.append(el("td", u.tokens_in === undefined ? "–" : u.tokens_in + " / " + u.tokens_out +
                  (u.cost !== undefined ? " ($" + u.cost.toFixed(4) + ")" : ""), "num"));
    const b = a.budget || {};
    tr.append(el("td", b.tokens_per_day ? b.tokens_per_day + " tokens" : "unlimited", "num"));
    return tr;
  });
  fillBody($("agents"), rows);
}

function renderDl(dl, pairs) {
  const items = [];
  for (const [k, v, cls] of pairs) items.push(el("dt", k), el("dd", v, cls));
  dl.replaceChildren(...items);
}

function renderServices(st) {
  const r = st.router;
  renderDl($("router"), [["running", r.running ? "yes" : "no", r.running ? "ok" : "bad"],
                         ["routed", r.routed], ["rejected", r.rejected], ["in flight", r.in_flight],
                         ["backlog", r.backlog]]);
  const m = st.models;
  renderDl($("models"), [["running", m.running ? "yes" : "not started (starts on the first model call)", m.running ? "ok" : ""],
                         ["requests", m.requests], ["failures", m.failures], ["waiting", m.pending]]);
  const c = st.contracts;
  const halted = $("halted");
  halted.textContent = !c.running ? "The contract service is not running." :
    c.halted ? "Halted: " + c.halted : "Not halted." +
    (c.quarantined.length ? " Quarantined: " + c.quarantined.join(", ") : "");
  halted.className = !c.running || c.halted || c.quarantined.length ? "bad" : "ok";
  fillBody($("violations"), c.violations.map(v => {
    const tr = el("tr");
    tr.append(el("td", v.id), el("td", v.check), el("td", v.severity), el("td", v.action), el("td", v.message));
    return tr;
  }));
  fillBody($("results"), c.results.map(v => {
    const tr = el("tr");
    tr.append(el("td", v.id), el("td", v.check), el("td", v.status, v.status === "pass" ? "ok" : v.status === "fail" ? "bad" : "warn"),
              el("td", v.message));
    return tr;
  }));
}

/* When this page first saw each event (ms since the epoch): the browser test compares it with the
 * event's time to measure the live path. */
const seen = new Map();

function renderEvents(st) {
  const rows = st.events.slice().reverse().map(e => {
    const tr = el("tr");
    if (!seen.has(e.seq)) seen.set(e.seq, Date.now());
    if (e.task_id) tr.dataset.task = e.task_id;
    tr.dataset.event = e.event;
    tr.dataset.time = String(e.time);
    tr.dataset.seen = String(seen.get(e.seq));
    tr.append(el("td", time(e.time)), el("td", e.event), el("td", e.agent || ""), el("td", e.task_id || ""),
              el("td", e.sender || ""), el("td", e.status || ""), el("td", e.detail || ""));
    return tr;
  });
  fillBody($("events"), rows);
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}

/* series: [{name, color, values}] over the same minutes; bars when one series. */
function plot(svg, series, bars) {
  const W = 300, H = 120, L = 28, B = 14, T = 6;
  let top = 0;
  for (const s of series) for (const v of s.values) top = Math.max(top, v);
  svg.dataset.max = String(top);
  const max = Math.max(1, top);
  const n = series.length ? series[0].values.length : 0;
  const kids = [];
  kids.push(svgEl("line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "axis" }));
  kids.push(svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  const label = svgEl("text", { x: 2, y: T + 8 });
  label.textContent = String(max);
  const zero = svgEl("text", { x: 2, y: H - B });
  zero.textContent = "0";
  const left = svgEl("text", { x: L, y: H - 2 });
  left.textContent = "-60 min";
  const right = svgEl("text", { x: W - 22, y: H - 2 });
  right.textContent = "now";
  kids.push(label, zero, left, right);
  const x = i => L + (n > 1 ? i * (W - L - 2) / (n - 1) : 0);
  const y = v => H - B - v * (H - B - T) / max;
  for (const s of series) {
    if (bars) {
      const w = Math.max(1, (W - L) / n - 1);
      s.values.forEach((v, i) => {
        if (v > 0) kids.push(svgEl("rect", { x: x(i) - w / 2, y: y(v), width: w, height: H - B - y(v), fill: s.color }));
      });
    } else {
      const pts = s.values.map((v, i) => x(i).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
      kids.push(svgEl("polyline", { points: pts, fill: "none", stroke: s.color, "stroke-width": 1.5 }));
    }
  }
  svg.replaceChildren(...kids);
}

function renderPlots(st) {
  const h = st.history;
  const names = st.agents.map(a => a.name);
  const color = name => COLORS[names.indexOf(name) % COLORS.length];
  plot($("plot-tasks"), [{ name: "tasks", color: COLORS[0], values: h.tasks }], true);
  plot($("plot-queue"), names.map(n => ({ name: n, color: color(n), values: h.queue[n] })), false);
  plot($("plot-tokens"), names.map(n => ({ name: n, color: color(n), values: h.tokens[n] })), false);
  $("legend").replaceChildren(...names.map(n => {
    const s = el("span");
    const sw = el("i");
    sw.style.background = color(n);
    s.append(sw, document.createTextNode(n));
    return s;
  }));
}

function render(st) {
  $("system").textContent = st.system || "ConspiracyOS";
  renderAgents(st);
  renderServices(st);
  renderEvents(st);
  renderPlots(st);
  document.body.dataset.updated = String(st.now);
}

function connect() {
  const conn = $("connection");
  const es = new EventSource("/api/events");
  es.addEventListener("state", ev => {
    conn.textContent = "live";
    conn.className = "ok";
    render(JSON.parse(ev.data));
  });
  es.onerror = () => {
    conn.textContent = "reconnecting…";
    conn.className = "bad";
  };
}

document.body.dataset.loaded = String(Date.now());
connect();
