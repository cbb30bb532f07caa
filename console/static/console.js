// Shared by every page: JSON requests, event streams that resume, and small renderers.
"use strict";

const qt = {};

qt.escape = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => (
  { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

// Times are int64 nanoseconds since the epoch (UTC); 0 is unknown.
qt.time = (nanos) => (nanos ? new Date(Number(nanos) / 1e6).toISOString().replace(".000Z", "Z") : "-");
qt.num = (x, digits = 2) => (x === null || x === undefined ? "-" : Number(x).toFixed(digits));
qt.pct = (x, digits = 1) => (x === null || x === undefined ? "-" : (100 * x).toFixed(digits) + "%");
qt.badge = (text) => `<span class="badge ${qt.escape(text)}">${qt.escape(text)}</span>`;

qt.get = async (path, asked = false) => {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (response.status === 401 && !asked) {
    // The mesh requires a token: kept in a cookie, which event streams send too.
    const token = window.prompt("This mesh requires a token to read it:");
    if (token) {
      document.cookie = `qtmesh_token=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
      return qt.get(path, true);
    }
  }
  const body = await response.json();
  if (!response.ok) throw new Error(`${path}: ${body.message || body.detail || response.status}`);
  return body;
};

// Follows a server-sent event stream from ``after``; the browser reconnects by itself and the
// server resumes after the Last-Event-ID it sends, so no event is missed or seen twice.
qt.follow = async (path, after, handlers) => {
  // An EventSource refused (401) never retries: make sure reads are authorised first.
  await qt.get("/api/session");
  const url = after === null || after === undefined ? path : `${path}?after=${after}`;
  const source = new EventSource(url);
  const live = document.querySelector(".live");
  source.onopen = () => { if (live) { live.className = "live on"; live.textContent = "live"; } };
  source.onerror = () => { if (live) { live.className = "live off"; live.textContent = "reconnecting"; } };
  for (const [kind, handle] of Object.entries(handlers)) {
    source.addEventListener(kind, (event) => handle(JSON.parse(event.data), Number(event.lastEventId)));
  }
  return source;
};

// Runs ``work`` once, ``ms`` after the first of a burst of calls: a replay of a stream's history
// asks for one refresh, not one per event.
qt.debounce = (work, ms) => {
  let pending = null;
  return () => {
    if (!pending) pending = setTimeout(() => { pending = null; work(); }, ms);
  };
};

// The fleet's arb-missions (GET /api/fleet's missions), open and closed, with their P&L.
qt.missionColumns = [
  { title: "mission", cell: (m) => `<code>${qt.escape(m.mission.id)}</code>` },
  { title: "long / short", cell: (m) => `${qt.escape(m.mission.long_sector)} / ${qt.escape(m.mission.short_sector)}` },
  { title: "allocation", num: true, cell: (m) => qt.pct(m.mission.allocation) },
  { title: "opened", cell: (m) => qt.time(m.mission.open_time) },
  { title: "state", cell: (m) => qt.badge(m.active ? "OPEN" : "CLOSED") },
  { title: "ROI", num: true, cell: (m) => qt.pct(m.roi, 2) },
  { title: "P&L", num: true, cell: (m) => qt.num(m.pnl) },
];

// Renders rows into a table body, ``size`` at a time, with previous/next buttons.
qt.pagedTable = (root, columns, size = 10) => {
  let rows = [];
  let page = 0;
  root.innerHTML = `<table><thead><tr>${columns.map((c) => `<th>${c.title}</th>`).join("")}</tr></thead>
    <tbody></tbody></table><div class="pager"><button data-prev>previous</button>
    <span data-where></span><button data-next>next</button></div>`;
  const body = root.querySelector("tbody");
  const render = () => {
    const pages = Math.max(1, Math.ceil(rows.length / size));
    page = Math.min(page, pages - 1);
    const shown = rows.slice(page * size, (page + 1) * size);
    body.innerHTML = shown.length
      ? shown.map((row) => `<tr>${columns.map((c) => `<td class="${c.num ? "num" : ""}">${c.cell(row)}</td>`).join("")}</tr>`).join("")
      : `<tr><td class="empty" colspan="${columns.length}">nothing yet</td></tr>`;
    root.querySelector("[data-where]").textContent = `${page + 1} / ${pages}`;
    root.querySelector("[data-prev]").disabled = page === 0;
    root.querySelector("[data-next]").disabled = page >= pages - 1;
  };
  root.querySelector("[data-prev]").onclick = () => { page -= 1; render(); };
  root.querySelector("[data-next]").onclick = () => { page += 1; render(); };
  render();
  return { set(next) { rows = next; render(); } };
};
