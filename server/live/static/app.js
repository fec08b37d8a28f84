// trackbridge live view: one job's clients, pushed by the receiver over Server-Sent Events.
// Plain DOM and inline SVG (charts.js), no dependencies: works offline, under a strict CSP.
"use strict";

(() => {
  const { chartSvg, color, domainOf, drawChart, fmt, setText, svg } = window.trackbridgeCharts;
  const MAX_POINTS = 600; // per series in the browser; thinned to half past it
  const DEFAULT_CHARTS = 3;

  const $ = (selector) => document.querySelector(selector);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const counter = new Intl.NumberFormat("en-US");
  const count = (n) => counter.format(Number(n));
  const collator = new Intl.Collator(undefined, { numeric: true });
  const byName = collator.compare;

  const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "jobs" && parts.length === 2) {
    jobView(parts[1]);
  } else {
    jobsView();
  }

  // -- the job list ----------------------------------------------------------------------------

  function jobsView() {
    $("#jobs-view").hidden = false;
    const stream = $("#stream-state");
    async function poll() {
      try {
        const response = await fetch("/api/jobs", { cache: "no-store" });
        const data = await response.json();
        const body = $("#jobs tbody");
        body.replaceChildren();
        for (const job of data.jobs) {
          const row = el("tr");
          const cell = el("td");
          const link = el("a", "", job.job);
          link.href = `/jobs/${encodeURIComponent(job.job)}`;
          cell.append(link);
          row.append(cell, el("td", "", String(job.clients)), el("td", "", String(job.connected)));
          body.append(row);
        }
        $("#no-jobs").hidden = data.jobs.length > 0;
        stream.className = "stream-state live";
        setText(stream, "live");
      } catch (err) {
        stream.className = "stream-state down";
        setText(stream, "receiver unreachable");
      }
    }
    poll();
    setInterval(poll, 2000);
  }

  // -- one job -----------------------------------------------------------------------------------

  function jobView(job) {
    document.title = `${job} · trackbridge live`;
    $("#job-title").textContent = job;
    $("#job-view").hidden = false;

    const hash = new URLSearchParams(location.hash.slice(1));
    const st = {
      clients: new Map(), // id -> row
      series: new Map(), // "client\u0000key" -> {s, v, t, version}
      keys: new Set(),
      chosen: hash.has("metrics") ? hash.get("metrics").split(",").filter(Boolean) : null,
      layout: hash.get("layout") === "side" ? "side" : "overlay",
      clockOffset: 0,
      receiver: null,
      scheduled: false,
      dirty: { rows: true, latest: true, points: true },
    };
    const rows = new Map();
    const cards = new Map();
    let pickerKeys = "";
    let chartsKey = "";
    let source = null;

    const layout = $("#layout");
    layout.value = st.layout;
    layout.addEventListener("change", () => {
      st.layout = layout.value;
      saveHash();
      chartsKey = "";
      schedule();
    });

    function saveHash() {
      const h = new URLSearchParams();
      if (st.chosen !== null) h.set("metrics", st.chosen.join(","));
      h.set("layout", st.layout);
      history.replaceState(null, "", `#${h.toString()}`);
    }

    function connect() {
      if (source !== null) source.close();
      const metrics = encodeURIComponent((st.chosen || []).join(","));
      source = new EventSource(`/api/jobs/${encodeURIComponent(job)}/events?metrics=${metrics}`);
      source.onopen = () => streamState(true);
      source.onerror = () => streamState(false);
      source.onmessage = (event) => apply(JSON.parse(event.data));
    }

    function streamState(up) {
      const node = $("#stream-state");
      node.className = `stream-state ${up ? "live" : "down"}`;
      setText(node, up ? "live" : "reconnecting…");
    }

    function seriesOf(client, key) {
      const id = `${client}\u0000${key}`;
      let s = st.series.get(id);
      if (s === undefined) {
        s = { s: [], v: [], t: [], version: 0 };
        st.series.set(id, s);
      }
      return s;
    }

    function thin(arr) {
      const last = arr[arr.length - 1];
      const kept = arr.filter((_, i) => i % 2 === 0);
      if (kept[kept.length - 1] !== last) kept.push(last);
      return kept;
    }

    function apply(msg) {
      if (msg.type === "snapshot") {
        st.clients.clear();
        st.series.clear();
      }
      if (msg.now_ms) st.clockOffset = msg.now_ms - Date.now();
      if (msg.receiver) st.receiver = msg.receiver;
      st.dirty.rows = st.dirty.rows || msg.clients !== undefined || msg.type === "snapshot";
      st.dirty.latest = st.dirty.latest || msg.latest !== undefined;
      for (const row of msg.clients || []) {
        const known = st.clients.get(row.id);
        if (row.latest === undefined) row.latest = known === undefined ? {} : known.latest;
        st.clients.set(row.id, row);
        for (const key of Object.keys(row.latest)) st.keys.add(key);
      }
      for (const [client, perKey] of Object.entries(msg.latest || {})) {
        let row = st.clients.get(client);
        if (row === undefined) {
          row = { id: client, state: "connected", connected: true, latest: {} };
          st.clients.set(client, row);
        }
        for (const [key, point] of Object.entries(perKey)) {
          row.latest[key] = point;
          st.keys.add(key);
        }
      }
      for (const [client, perKey] of Object.entries(msg.points || {})) {
        for (const [key, pts] of Object.entries(perKey)) {
          const s = seriesOf(client, key);
          s.s.push(...pts.s);
          s.v.push(...pts.v.map(Number));
          s.t.push(...pts.t);
          if (s.s.length > MAX_POINTS) {
            s.s = thin(s.s);
            s.v = thin(s.v);
            s.t = thin(s.t);
          }
          s.version += 1;
        }
      }
      if (st.chosen === null && st.keys.size > 0) {
        st.chosen = [...st.keys].sort(byName).slice(0, DEFAULT_CHARTS);
        saveHash();
        connect(); // again, now asking for the points of the chosen metrics
      }
      schedule();
    }

    function schedule() {
      if (st.scheduled) return;
      st.scheduled = true;
      requestAnimationFrame(() => {
        st.scheduled = false;
        render();
      });
    }

    // -- rendering ---------------------------------------------------------------------------

    function render() {
      const clients = [...st.clients.values()].sort((a, b) => byName(a.id, b.id));
      const dirty = st.dirty;
      st.dirty = { rows: false, latest: false, points: false };
      if (dirty.rows) {
        renderReceiver(clients);
        renderTable(clients);
      }
      renderPicker();
      if (dirty.rows || dirty.latest) renderCards(clients);
      renderCharts(clients);
    }

    function renderReceiver(clients) {
      const node = $("#receiver-state");
      const r = st.receiver;
      if (r === null) return;
      const connected = clients.filter((c) => c.connected).length;
      const mlflow = r.mlflow_up ? "MLflow reachable" : "MLflow UNREACHABLE";
      const text = `${mlflow} · ${count(r.backlog)} events not yet in MLflow · ` +
        `${connected}/${clients.length} clients connected`;
      setText(node, text);
      node.classList.toggle("bad", !r.mlflow_up);
    }

    function renderPicker() {
      const keys = [...st.keys].sort(byName);
      const signature = `${keys.join("\u0000")}|${(st.chosen || []).join("\u0000")}`;
      if (signature === pickerKeys) return;
      pickerKeys = signature;
      const picker = $("#metric-picker");
      picker.replaceChildren(el("legend", "", "charts"));
      for (const key of keys) {
        const label = el("label");
        const box = el("input");
        box.type = "checkbox";
        box.value = key;
        box.checked = (st.chosen || []).includes(key);
        box.addEventListener("change", () => {
          const chosen = new Set(st.chosen || []);
          if (box.checked) chosen.add(key);
          else chosen.delete(key);
          st.chosen = [...chosen].sort(byName);
          saveHash();
          connect();
        });
        label.append(box, ` ${key}`);
        picker.append(label);
      }
    }

    const COLUMNS = [
      (c) => c.rate === undefined ? "" : fmt(c.rate),
      (c) => count(c.received || 0),
      (c) => count(c.acked || 0),
      (c) => count(c.flushed || 0),
      (c) => count(c.backlog || 0),
      (c) => count(c.client_pending || 0),
      (c) => count(c.dead || 0),
      (c) => lastSeen(c),
    ];

    function lastSeen(c) {
      if (!c.last_seen_ms) return "—";
      const s = Math.max(0, (Date.now() + st.clockOffset - c.last_seen_ms) / 1000);
      return s < 1 ? "now" : `${Math.round(s)} s ago`;
    }

    function renderTable(clients) {
      const body = $("#clients tbody");
      clients.forEach((c, index) => {
        let tr = rows.get(c.id);
        if (tr === undefined) {
          tr = el("tr");
          tr.dataset.client = c.id;
          tr.append(el("td", "client", c.id), el("td", "state"));
          for (let i = 0; i < COLUMNS.length; i += 1) tr.append(el("td", `col${i}`));
          const link = el("td", "link");
          link.append(el("a"));
          tr.append(link);
          rows.set(c.id, tr);
        }
        if (body.children[index] !== tr) body.insertBefore(tr, body.children[index] || null);
        const state = tr.children[1];
        setText(state, c.state);
        state.className = `state state-${c.state}`;
        tr.dataset.state = c.state;
        tr.classList.toggle("ended", !["connected", "disconnected"].includes(c.state));
        COLUMNS.forEach((column, i) => setText(tr.children[2 + i], column(c)));
        const a = tr.lastChild.firstChild;
        if (c.mlflow_url && a.href !== c.mlflow_url) {
          a.href = c.mlflow_url;
          a.target = "_blank";
          a.rel = "noopener";
          a.textContent = c.mlflow_run_id.slice(0, 8);
        }
      });
    }

    function renderCards(clients) {
      const box = $("#cards");
      clients.forEach((c, index) => {
        let entry = cards.get(c.id);
        if (entry === undefined) {
          const card = el("div", "card");
          card.dataset.client = c.id;
          const title = el("h3");
          const state = el("span", "state");
          title.append(el("span", "name", c.id), state);
          entry = { card, state, dl: el("dl"), dds: new Map(), charts: el("div", "card-charts") };
          card.append(title, entry.dl, entry.charts);
          cards.set(c.id, entry);
        }
        const card = entry.card;
        if (box.children[index] !== card) box.insertBefore(card, box.children[index] || null);
        if (card.dataset.state !== c.state) {
          setText(entry.state, c.state);
          entry.state.className = `state state-${c.state}`;
          card.dataset.state = c.state;
        }
        let added = false;
        for (const [key, [step, value]] of Object.entries(c.latest)) {
          let dd = entry.dds.get(key);
          if (dd === undefined) {
            dd = el("dd", "latest");
            dd.dataset.key = key;
            const dt = el("dt", "", key);
            dt.title = key;
            entry.dds.set(key, dd);
            dd.label = dt;
            added = true;
          }
          const text = `${fmt(value)} @${step}`;
          if (dd.textContent !== text) {
            dd.textContent = text;
            dd.dataset.value = String(value);
            dd.dataset.step = String(step);
          }
        }
        if (added) {
          for (const key of [...entry.dds.keys()].sort(byName)) {
            const dd = entry.dds.get(key);
            entry.dl.append(dd.label, dd);
          }
        }
      });
    }

    function renderCharts(clients) {
      const chosen = st.chosen || [];
      const ids = clients.map((c) => c.id);
      const signature = `${st.layout}|${chosen.join("\u0000")}|${ids.join("\u0000")}`;
      if (signature !== chartsKey) {
        chartsKey = signature;
        buildCharts(chosen, ids);
      }
      // One scale per metric, shared by every client: side-by-side charts compare at a glance.
      const seriesFor = (client, key) => st.series.get(`${client}\u0000${key}`);
      const domains = new Map(
        chosen.map((key) => [key, domainOf(ids.map((id) => seriesFor(id, key)))]),
      );
      for (const chart of document.querySelectorAll("svg.chart")) {
        const domain = domains.get(chart.dataset.key);
        if (domain !== undefined) drawChart(chart, domain, seriesFor);
      }
    }

    function buildCharts(chosen, ids) {
      const charts = $("#charts");
      charts.replaceChildren();
      for (const entry of cards.values()) entry.charts.replaceChildren();
      if (st.layout === "overlay") {
        for (const key of chosen) {
          const panel = el("div", "chart-panel");
          panel.dataset.key = key;
          panel.append(el("h3", "", key), chartSvg(key, ids), el("div", "chart-labels"));
          const legend = el("div", "legend");
          for (const id of ids) {
            const item = el("span");
            const swatch = svg("svg", { viewBox: "0 0 10 10" });
            swatch.append(svg("rect", { width: 10, height: 10, fill: color(id) }));
            item.append(swatch, id);
            legend.append(item);
          }
          panel.append(legend);
          charts.append(panel);
        }
      } else {
        for (const id of ids) {
          const holder = cards.get(id).charts;
          for (const key of chosen) {
            holder.append(el("div", "chart-name", key), chartSvg(key, [id]));
          }
        }
      }
    }

    connect();
    setInterval(() => {
      st.dirty.rows = true; // "last seen" ages even when nothing arrives
      schedule();
    }, 1000);
  }
})();
