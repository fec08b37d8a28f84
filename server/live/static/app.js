// trackbridge live view: one job's clients, pushed by the receiver over Server-Sent Events.
// Plain DOM plus uPlot (charts.js): no CDN, works offline, under a strict CSP.
"use strict";

(() => {
  const { MetricChart, assignColors, color, fmt, setText } = window.trackbridgeCharts;
  // Per series in the browser; past it, neighbouring points merge in pairs, each keeping the
  // min and max of what it stands for (the receiver keeps --live-points such buckets).
  const MAX_POINTS = 2000;
  const DEFAULT_CHARTS = 3;
  const ENDED = ["finished", "failed", "killed"];

  const $ = (selector) => document.querySelector(selector);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const counter = new Intl.NumberFormat("en-US");
  const count = (n) => counter.format(Number(n));
  const byName = new Intl.Collator(undefined, { numeric: true }).compare;

  const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "jobs" && parts.length >= 2) {
    jobView(parts.slice(1).join("/"));
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
    const smoothing = Number(hash.get("smoothing"));
    const st = {
      clients: new Map(), // id -> row
      series: new Map(), // "client\u0000key" -> {s, v, t, version}
      // Series versions count on across snapshots: a chart redraws when its series' versions
      // change, and a snapshot rebuilds every series (a reconnect's, after partial data).
      versions: 0,
      keys: new Set(),
      chosen: hash.has("metrics") ? hash.get("metrics").split(",").filter(Boolean) : null,
      layout: hash.get("layout") === "side" ? "side" : "overlay",
      xMode: ["wall", "relative"].includes(hash.get("x")) ? hash.get("x") : "step",
      logY: hash.get("log") === "1",
      smoothing: smoothing >= 0 && smoothing < 1 ? smoothing : 0,
      zoom: null,
      hidden: new Set(),
      chartsDue: 0, // performance.now() before which charts are not redrawn
      chartsTimer: 0,
      clockOffset: 0,
      receiver: null,
      scheduled: false,
      dirty: { rows: true, latest: true },
    };
    const rows = new Map();
    const cards = new Map();
    let charts = []; // MetricChart
    let pickerKeys = "";
    let chartsKey = "";
    let source = null;
    // For people debugging, and tests (``apply`` takes a message as the stream sends it).
    window.trackbridgeLive = { charts: () => charts, state: st, apply: (msg) => apply(msg) };

    const controls = {
      layout: $("#layout"), xMode: $("#x-axis"), logY: $("#log-y"), smoothing: $("#smoothing"),
    };
    controls.layout.value = st.layout;
    controls.xMode.value = st.xMode;
    controls.logY.checked = st.logY;
    controls.smoothing.value = String(st.smoothing);
    setText($("#smoothing-value"), st.smoothing.toFixed(2));
    const rebuild = () => {
      saveHash();
      chartsKey = "";
      schedule();
    };
    controls.layout.addEventListener("change", () => { st.layout = controls.layout.value; rebuild(); });
    controls.xMode.addEventListener("change", () => {
      st.xMode = controls.xMode.value;
      st.zoom = null;
      rebuild();
    });
    controls.logY.addEventListener("change", () => { st.logY = controls.logY.checked; rebuild(); });
    controls.smoothing.addEventListener("input", () => {
      st.smoothing = Number(controls.smoothing.value);
      setText($("#smoothing-value"), st.smoothing.toFixed(2));
      rebuild();
    });
    $("#reset-zoom").addEventListener("click", () => setZoom(null));

    function saveHash() {
      const h = new URLSearchParams();
      if (st.chosen !== null) h.set("metrics", st.chosen.join(","));
      h.set("layout", st.layout);
      if (st.xMode !== "step") h.set("x", st.xMode);
      if (st.logY) h.set("log", "1");
      if (st.smoothing > 0) h.set("smoothing", String(st.smoothing));
      history.replaceState(null, "", `#${h.toString()}`);
    }

    function setZoom(range) {
      st.zoom = range;
      $("#reset-zoom").disabled = range === null;
      for (const chart of charts) chart.zoom(range);
    }

    function toggle(id, visible) {
      if (visible) st.hidden.delete(id);
      else st.hidden.add(id);
      for (const chart of charts) chart.show(id, visible);
    }

    function connect() {
      if (source !== null) source.close();
      // An aggregate's mean is charted in its min-max band: ask for those two as well.
      const wanted = (st.chosen || []).flatMap((key) => (key.endsWith("/mean")
        ? [key, `${key.slice(0, -5)}/min`, `${key.slice(0, -5)}/max`] : [key]));
      const metrics = encodeURIComponent([...new Set(wanted)].join(","));
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
        s = { s: [], v: [], t: [], lo: [], hi: [], version: 0 };
        st.series.set(id, s);
      }
      return s;
    }

    // Merges neighbouring points in pairs: the later one is drawn, the envelope is both's.
    function thin(s) {
      const out = { s: [], v: [], t: [], lo: [], hi: [], version: s.version };
      for (let i = 0; i < s.s.length; i += 2) {
        const j = Math.min(i + 1, s.s.length - 1);
        out.s.push(s.s[j]);
        out.v.push(s.v[j]);
        out.t.push(s.t[j]);
        out.lo.push(Math.min(s.lo[i], s.lo[j]));
        out.hi.push(Math.max(s.hi[i], s.hi[j]));
      }
      return out;
    }

    function apply(msg) {
      if (msg.type === "snapshot") {
        st.clients.clear();
        st.series.clear();
        assignColors((msg.clients || []).map((c) => c.id).sort(byName));
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
          let s = seriesOf(client, key);
          const values = pts.v.map(Number);
          s.s.push(...pts.s);
          s.v.push(...values);
          s.t.push(...pts.t);
          s.lo.push(...(pts.lo ? pts.lo.map(Number) : values));
          s.hi.push(...(pts.hi ? pts.hi.map(Number) : values));
          if (s.s.length > MAX_POINTS) {
            s = thin(s);
            st.series.set(`${client}\u0000${key}`, s);
          }
          st.versions += 1;
          s.version = st.versions;
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
      assignColors(clients.map((c) => c.id)); // new clients take the next colours, by name
      const dirty = st.dirty;
      st.dirty = { rows: false, latest: false };
      if (dirty.rows) {
        renderReceiver(clients);
        renderTable(clients);
      }
      renderPicker();
      if (dirty.rows || dirty.latest) renderCards(clients);
      renderCharts(clients);
    }

    function renderReceiver(clients) {
      const r = st.receiver;
      if (r === null) return;
      const states = new Map();
      for (const c of clients) states.set(c.state, (states.get(c.state) || 0) + 1);
      const order = [...states.keys()].sort((a, b) => (a !== "connected") - (b !== "connected") || byName(a, b));
      const counts = $("#client-counts");
      const noun = clients.length === 1 ? "client" : "clients";
      setText(counts, clients.length === 0 ? "no clients yet"
        : `${clients.length} ${noun}: ${order.map((s) => `${states.get(s)} ${s}`).join(", ")}`);
      for (const state of ["connected", "disconnected", ...ENDED]) {
        counts.dataset[state] = String(states.get(state) || 0);
      }
      const mlflow = $("#mlflow-state");
      const noMlflow = Array.isArray(r.sinks) && !r.sinks.includes("mlflow");
      setText(mlflow, noMlflow ? (r.mlflow_up ? "MLflow off; files written" : "writing files FAILING")
        : (r.mlflow_up ? "MLflow reachable" : "MLflow UNREACHABLE"));
      mlflow.classList.toggle("bad", !r.mlflow_up);
      const backlog = $("#job-backlog");
      backlog.dataset.value = String(r.job_backlog);
      setText(backlog, count(r.job_backlog));
      setText($("#receiver-backlog"), count(r.backlog));
      renderRounds(r.rounds || []);
    }

    // Per-round health (the receiver's aggregates): who reported, who is missing and for how
    // long, the slowest site, and each aggregated metric's spread across the sites.
    function renderRounds(rounds) {
      $("#rounds-box").hidden = rounds.length === 0;
      const rows = rounds.map((r) => {
        const tr = el("tr");
        tr.dataset.round = String(r.round);
        tr.dataset.missing = r.missing.join(",");
        const slowest = Object.entries(r.reported).sort((a, b) => b[1] - a[1])[0];
        const spread = Object.entries(r.spread).map(([key, s]) =>
          `${key}: ${fmt(s.min)} … ${fmt(s.max)}, ${fmt(s.mean)}`).join("; ");
        const missing = el("td", r.missing.length ? "bad" : "",
          r.missing.length ? `${r.missing.join(", ")} for ${Math.round(r.missing_for_s)} s` : "none");
        tr.append(
          el("td", "", String(r.round)),
          el("td", "", `${Object.keys(r.reported).length} of ${r.sites}`),
          missing,
          el("td", "", slowest && slowest[1] >= 1 ? `${slowest[0]} +${Math.round(slowest[1])} s` : "–"),
          el("td", "", r.late.join(", ") || "–"),
          el("td", "", spread),
        );
        return tr;
      });
      $("#rounds tbody").replaceChildren(...rows);
    }

    function renderPicker() {
      const keys = [...st.keys].sort(byName);
      const signature = `${keys.join("\u0000")}|${(st.chosen || []).join("\u0000")}`;
      if (signature === pickerKeys) return;
      pickerKeys = signature;
      const picker = $("#metric-picker");
      picker.replaceChildren(el("legend", "", "metrics"));
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

    function stateCell(node, state) {
      setText(node, state);
      node.className = `state state-${state}`;
    }

    function renderTable(clients) {
      const body = $("#clients tbody");
      clients.forEach((c, index) => {
        let tr = rows.get(c.id);
        if (tr === undefined) {
          tr = el("tr");
          tr.dataset.client = c.id;
          const name = el("td", "client");
          const swatch = el("span", "swatch");
          swatch.style.background = color(c.id);
          name.append(swatch, c.id);
          tr.append(name, el("td", "state"));
          for (let i = 0; i < COLUMNS.length; i += 1) tr.append(el("td", `col${i}`));
          const link = el("td", "link");
          link.append(el("a"));
          tr.append(link);
          rows.set(c.id, tr);
        }
        if (body.children[index] !== tr) body.insertBefore(tr, body.children[index] || null);
        stateCell(tr.children[1], c.state);
        tr.dataset.state = c.state;
        tr.classList.toggle("ended", ENDED.includes(c.state));
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

    // Cards far off screen are not updated until they come near it: with 100 clients x 20
    // metrics, rewriting every card five times a second kept the browser busy all the time.
    const nearCards = new Set();
    const seen = new IntersectionObserver((entries) => {
      for (const e of entries) {
        const id = e.target.dataset.client;
        if (e.isIntersecting) nearCards.add(id);
        else nearCards.delete(id);
      }
      st.dirty.latest = true;
      schedule();
    }, { rootMargin: "100% 0px" });

    function renderCards(clients) {
      const box = $("#cards");
      clients.forEach((c, index) => {
        let entry = cards.get(c.id);
        if (entry === undefined) {
          const card = el("div", "card");
          card.dataset.client = c.id;
          card.style.borderTopColor = color(c.id);
          const title = el("h3");
          const state = el("span", "state");
          title.append(el("span", "name", c.id), state);
          entry = { card, state, dl: el("dl"), dds: new Map(), charts: el("div", "card-charts") };
          card.append(title, entry.dl, entry.charts);
          cards.set(c.id, entry);
          seen.observe(card);
          nearCards.add(c.id); // until the observer says otherwise
        }
        const card = entry.card;
        if (box.children[index] !== card) box.insertBefore(card, box.children[index] || null);
        if (card.dataset.state !== c.state) {
          stateCell(entry.state, c.state);
          card.dataset.state = c.state;
        }
        if (!nearCards.has(c.id)) return;
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

    // -- charts ------------------------------------------------------------------------------

    const seriesFor = (client, key) => st.series.get(`${client}\u0000${key}`);

    function firstTime(ids, chosen) {
      let t0 = Infinity;
      for (const id of ids) {
        for (const key of chosen) {
          const s = seriesFor(id, key);
          if (s !== undefined && s.t.length) t0 = Math.min(t0, s.t[0]);
        }
      }
      return Number.isFinite(t0) ? t0 : 0;
    }

    // One y scale per metric across every client (side by side compares at a glance).
    function domainOf(key, ids) {
      return (u, dataMin, dataMax) => {
        let lo = Infinity;
        let hi = -Infinity;
        for (const id of ids) {
          const s = seriesFor(id, key);
          for (const v of s === undefined ? [] : s.v) {
            if (Number.isFinite(v) && (!st.logY || v > 0)) {
              lo = Math.min(lo, v);
              hi = Math.max(hi, v);
            }
          }
        }
        if (!Number.isFinite(lo)) return [dataMin ?? 0, dataMax ?? 1];
        if (lo === hi) return st.logY ? [lo / 2, hi * 2] : [lo - 1, hi + 1];
        const pad = st.logY ? 0 : (hi - lo) * 0.05;
        return [lo - pad, hi + pad];
      };
    }

    function renderCharts(clients) {
      const chosen = st.chosen || [];
      const ids = clients.map((c) => c.id);
      const signature = [st.layout, st.xMode, st.logY, st.smoothing, chosen.join("\u0000"),
        ids.join("\u0000")].join("|");
      if (signature !== chartsKey) {
        chartsKey = signature;
        buildCharts(chosen, ids);
      }
      // Redrawing costs the browser in proportion to clients x points: past a few clients the
      // charts are redrawn less often, so that they take at most about a quarter of its time.
      const now = performance.now();
      if (now < st.chartsDue) {
        if (!st.chartsTimer) {
          st.chartsTimer = setTimeout(() => { st.chartsTimer = 0; schedule(); }, st.chartsDue - now);
        }
        return;
      }
      const t0 = firstTime(ids, chosen);
      for (const chart of charts) {
        const version = chart.ids.map((id) => seriesFor(id, chart.key)?.version ?? -1).join(",");
        chart.update(seriesFor, t0, `${version}|${t0}`, st.zoom);
      }
      // The browser rasterises the lines after this returns, so the series drawn count too.
      const spent = performance.now() - now;
      const lines = charts.reduce((n, chart) => n + chart.ids.length, 0);
      st.chartsDue = performance.now() + Math.min(2000, Math.max(3 * spent, 4 * lines));
    }

    function buildCharts(chosen, ids) {
      for (const chart of charts) chart.destroy();
      charts = [];
      const box = $("#charts");
      box.replaceChildren();
      for (const entry of cards.values()) entry.charts.replaceChildren();
      const view = (compact, domain) => ({
        xMode: st.xMode, logY: st.logY, smoothing: st.smoothing, compact, domain,
        sync: `trackbridge-${job}`, onZoom: setZoom, onToggle: toggle,
      });
      if (st.layout === "overlay") {
        for (const key of chosen) {
          const panel = el("div", "chart-panel");
          panel.dataset.key = key;
          const title = el("h3", "", key);
          const csv = el("a", "csv", "CSV");
          csv.href = `/api/jobs/${encodeURIComponent(job)}/csv?metric=${encodeURIComponent(key)}`;
          csv.download = `${job}-${key}.csv`.replace(/[^\w.-]+/g, "_");
          csv.title = "the points this chart draws, with each point's min and max";
          title.append(" ", csv);
          panel.append(title);
          box.append(panel);
          charts.push(new MetricChart(panel, key, ids, view(false, null)));
        }
      } else {
        for (const id of ids) {
          const holder = cards.get(id)?.charts;
          if (holder === undefined) continue;
          for (const key of chosen) {
            const panel = el("div", "card-chart");
            panel.append(el("div", "chart-name", key));
            holder.append(panel);
            charts.push(new MetricChart(panel, key, [id], view(true, domainOf(key, ids))));
          }
        }
      }
      box.hidden = charts.length > 0 && st.layout !== "overlay";
      for (const id of st.hidden) for (const chart of charts) chart.show(id, false);
    }

    window.addEventListener("resize", () => {
      for (const chart of charts) chart.resize();
    });

    connect();
    setInterval(() => {
      st.dirty.rows = true; // "last seen" ages even when nothing arrives
      schedule();
    }, 1000);
  }
})();
