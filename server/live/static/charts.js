// trackbridge live view: line charts drawn by uPlot (static/vendor/, MIT; refresh.sh there
// fetches it), and the small helpers the page shares. Loaded before app.js; exposes
// window.trackbridgeCharts.
"use strict";

(() => {
  // Glasbey et al.'s "dark" palette as published by colorcet (CC-BY 4.0): colours picked one
  // by one to be as distinct as possible from all before them, readable on a light background.
  const PALETTE = [
    "#d60000", "#8c3bff", "#018700", "#00acc6", "#e6a500", "#ff7ed1", "#6b004f", "#573b00",
    "#005659", "#15e18c", "#0000dd", "#a17569", "#bcb6ff", "#bf03b8", "#645472", "#790000",
    "#0774d8", "#729a7c", "#ff7752", "#004b00", "#8e7b01", "#f2007b", "#8eba00", "#a57bb8",
    "#5901a3", "#e2afaf", "#a03a52", "#a1c8c8", "#9e4b00", "#546744", "#bac389", "#5e7b87",
    "#60383b", "#8287ff", "#380000", "#e252ff", "#2f5282", "#7ecaff", "#c4668e", "#008069",
  ];
  const assigned = new Map(); // client -> colour, kept for the page's life

  // Clients get palette colours in the order given (the page passes them sorted), each once;
  // past the palette, hues a golden angle apart at alternating lightness.
  function assignColors(ids) {
    for (const id of ids) {
      if (assigned.has(id)) continue;
      const n = assigned.size;
      const color = n < PALETTE.length
        ? PALETTE[n]
        : `hsl(${(n * 137.508) % 360}, 70%, ${n % 2 ? 35 : 50}%)`;
      assigned.set(id, color);
    }
  }

  function color(id) {
    assignColors([id]);
    return assigned.get(id);
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "—";
    const v = Number(value);
    if (Number.isNaN(v)) return "NaN";
    if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
    if (Number.isInteger(v)) return String(v);
    return String(Number(v.toPrecision(5)));
  }

  // TensorBoard's smoothing: an exponential moving average, debiased so that the first
  // points are not dragged towards zero. Non-finite values pass through and do not count.
  function smooth(values, weight) {
    if (!(weight > 0)) return values;
    const out = new Array(values.length);
    let last = 0;
    let n = 0;
    for (let i = 0; i < values.length; i += 1) {
      const v = values[i];
      if (v === null || !Number.isFinite(v)) {
        out[i] = v;
        continue;
      }
      last = last * weight + (1 - weight) * v;
      n += 1;
      out[i] = last / (1 - weight ** n);
    }
    return out;
  }

  // One client's points as uPlot wants them: x ascending, one point per x (the last logged
  // wins), values that cannot be drawn as gaps; and each point's min/max envelope.
  function table(s, xMode, t0, logY, weight) {
    const xs = xMode === "step" ? s.s : s.t.map((t) => (xMode === "wall" ? t / 1000 : (t - t0) / 1000));
    let sorted = true;
    for (let i = 1; i < xs.length && sorted; i += 1) sorted = xs[i - 1] <= xs[i];
    const order = xs.map((_, i) => i);
    if (!sorted) order.sort((a, b) => xs[a] - xs[b] || a - b); // logged out of order: rare
    const x = [];
    const y = [];
    const lo = [];
    const hi = [];
    const drawn = (v) => (!Number.isFinite(v) || (logY && v <= 0) ? null : v);
    for (const i of order) {
      const v = drawn(s.v[i]);
      const low = s.lo ? drawn(s.lo[i]) : v;
      const high = s.hi ? drawn(s.hi[i]) : v;
      if (x.length && x[x.length - 1] === xs[i]) {
        const last = y.length - 1;
        y[last] = v;
        lo[last] = lo[last] === null ? low : Math.min(lo[last], low ?? lo[last]);
        hi[last] = hi[last] === null ? high : Math.max(hi[last], high ?? hi[last]);
      } else {
        x.push(xs[i]);
        y.push(v);
        lo.push(low);
        hi.push(high);
      }
    }
    return [x, smooth(y, weight), y, lo, hi];
  }

  // The value a line had at index idx of the joined data: its point there, else its latest
  // one before (clients log at different steps and times: the legend shows every client).
  function valueAt(values, idx) {
    for (let i = idx; i >= 0; i -= 1) if (values[i] !== null && values[i] !== undefined) return values[i];
    return null;
  }

  const LATEST_IN_LEGEND = 12;
  const AGGREGATE = "(aggregate)"; // the client the receiver shows a job's aggregates as
  const X_LABELS = { step: "step", wall: "time", relative: "seconds since start" };
  // Steps are whole numbers: no ticks between them.
  const STEP_INCRS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7].map((p) => m * p))
    .sort((a, b) => a - b);

  // What the legend shows away from the cursor: each line's latest value.
  function lastOf(values) {
    if (!values) return null;
    for (let i = values.length - 1; i >= 0; i -= 1) if (values[i] !== null) return values[i];
    return null;
  }

  // The width a chart may take in its holder (inside its padding).
  function innerWidth(holder) {
    const style = getComputedStyle(holder);
    const pad = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
    return Math.max(200, Math.floor(holder.clientWidth - pad));
  }

  // A chart of one metric with a line per client; with smoothing, each client's raw line is
  // drawn faintly behind its smoothed one (and left out of the legend).
  class MetricChart {
    constructor(holder, key, ids, view) {
      this.key = key;
      this.ids = ids;
      this.view = view; // {xMode, logY, smoothing, compact, sync, onZoom, onToggle, domain}
      this.signature = "";
      const raw = view.smoothing > 0;
      // Away from the cursor the legend shows each line's latest value; with many clients it
      // shows nothing there (the cards have them), sparing the browser a relayout per update.
      const latest = ids.length <= LATEST_IN_LEGEND;
      const value = (u, v, sidx, idx) => {
        if (idx != null) return fmt(v ?? valueAt(u.data[sidx], idx));
        return latest ? fmt(lastOf(u.data[sidx])) : "";
      };
      const series = [{
        label: X_LABELS[view.xMode],
        value: (u, v, sidx, idx) => this.xText(idx == null ? lastOf(u.data[0]) : v),
      }];
      this.clientOf = [null];
      for (const id of ids) {
        series.push({
          label: id, stroke: color(id), width: view.compact ? 1.5 : 2, spanGaps: true,
          value, points: { show: false },
        });
        this.clientOf.push(id);
        if (raw) {
          series.push({
            label: `${id} (raw)`, stroke: `${color(id)}44`, width: 1, spanGaps: true,
            value, points: { show: false },
          });
          this.clientOf.push(id);
        }
      }
      // A cross-client aggregate's mean gets its min-max band (the receiver's "(aggregate)"
      // client logs <key>/mean, /min and /max together).
      this.band = key.endsWith("/mean") && ids.includes(AGGREGATE) ? key.slice(0, -5) : null;
      if (this.band) {
        for (const edge of ["min", "max"]) {
          series.push({
            label: `${AGGREGATE} ${edge}`, stroke: `${color(AGGREGATE)}66`, width: 1,
            spanGaps: true, value, points: { show: false },
          });
          this.clientOf.push(null);
        }
      }
      const grid = { stroke: "#e6e9ef", width: 1 };
      const ticks = { stroke: "#c9ced8", width: 1, size: 4 };
      const font = view.compact ? "10px system-ui, sans-serif" : "11px system-ui, sans-serif";
      const opts = {
        width: innerWidth(holder),
        height: view.compact ? 150 : 240,
        series,
        bands: this.band
          ? [{ series: [series.length - 1, series.length - 2], fill: `${color(AGGREGATE)}22` }]
          : undefined,
        scales: {
          x: { time: view.xMode === "wall" },
          y: { distr: view.logY ? 3 : 1, range: view.domain ? () => view.domain() : undefined },
        },
        axes: [
          {
            grid, ticks, font, stroke: "#5b6472", space: view.compact ? 50 : 70,
            incrs: view.xMode === "step" ? STEP_INCRS : undefined,
          },
          {
            grid, ticks, font, stroke: "#5b6472", size: view.compact ? 46 : 58,
            values: (u, splits) => splits.map(fmt),
          },
        ],
        legend: { live: true },
        cursor: {
          sync: { key: view.sync, setSeries: false },
          drag: { x: true, y: false, setScale: false },
          points: { size: 7 },
        },
        hooks: {
          draw: [(u) => this.drawEnvelopes(u)],
          setSelect: [(u) => this.selected(u)],
          setSeries: [(u, index, opts) => {
            if (opts && opts.show !== undefined && !this.applying) {
              view.onToggle(this.clientOf[index], opts.show);
            }
          }],
        },
      };
      this.envelopes = [];
      this.u = new uPlot(opts, [[]], holder);
      this.u.root.dataset.key = key;
      this.u.root.classList.add("chart");
      this.u.root.querySelectorAll(".u-legend .u-series").forEach((row, i) => {
        if (raw && i > 0 && i % 2 === 0) row.classList.add("raw");
        if (this.clientOf[i]) row.dataset.client = this.clientOf[i];
      });
      this.u.over.addEventListener("dblclick", () => view.onZoom(null));
    }

    // A thinned line's envelope: at each of its points, a faint vertical stroke from the
    // lowest to the highest value that point stands for (a spike stays visible).
    drawEnvelopes(u) {
      const ctx = u.ctx;
      const { left, top, width, height } = u.bbox;
      ctx.save();
      ctx.beginPath();
      ctx.rect(left, top, width, height);
      ctx.clip();
      ctx.lineWidth = Math.max(1, window.devicePixelRatio || 1);
      for (const env of this.envelopes) {
        if (!u.series[env.index].show) continue;
        ctx.strokeStyle = `${color(env.id)}55`;
        ctx.beginPath();
        for (let i = 0; i < env.x.length; i += 1) {
          const low = env.lo[i];
          const high = env.hi[i];
          if (low === null || high === null || low === high) continue;
          const px = u.valToPos(env.x[i], "x", true);
          ctx.moveTo(px, u.valToPos(low, "y", true));
          ctx.lineTo(px, u.valToPos(high, "y", true));
        }
        ctx.stroke();
      }
      ctx.restore();
    }

    xText(v) {
      if (v === null || v === undefined) return "—";
      if (this.view.xMode === "wall") return new Date(v * 1000).toLocaleTimeString();
      if (this.view.xMode === "relative") return `${fmt(v)} s`;
      return String(v);
    }

    selected(u) {
      if (u.select.width <= 1) return;
      const min = u.posToVal(u.select.left, "x");
      const max = u.posToVal(u.select.left + u.select.width, "x");
      u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
      this.view.onZoom({ min, max });
    }

    // Redraws when the data (signature) changed; keeps the zoom.
    update(seriesFor, t0, signature, zoom) {
      if (signature === this.signature) return;
      this.signature = signature;
      const { xMode, logY, smoothing } = this.view;
      this.envelopes = [];
      const tables = this.ids.map((id, n) => {
        const s = seriesFor(id, this.key);
        const [x, smoothed, raw, lo, hi] = s === undefined
          ? [[], [], [], [], []] : table(s, xMode, t0, logY, smoothing);
        if (lo.some((low, i) => low !== hi[i])) {
          this.envelopes.push({ id, index: 1 + n * (smoothing > 0 ? 2 : 1), x, lo, hi });
        }
        return smoothing > 0 ? [x, smoothed, raw] : [x, smoothed];
      });
      if (this.band) {
        for (const edge of ["min", "max"]) {
          const s = seriesFor(AGGREGATE, `${this.band}/${edge}`);
          const [x, , raw] = s === undefined ? [[], [], []] : table(s, xMode, t0, logY, 0);
          tables.push([x, raw]);
        }
      }
      const data = tables.length ? uPlot.join(tables) : [[]];
      this.u.setData(data, true);
      if (zoom) this.u.setScale("x", zoom);
      this.u.root.dataset.points = String(data[0].length);
    }

    zoom(range) {
      if (range) {
        this.u.setScale("x", range);
      } else {
        const x = this.u.data[0];
        if (x.length) this.u.setScale("x", { min: x[0], max: x[x.length - 1] });
      }
    }

    show(id, visible) {
      this.applying = true;
      this.clientOf.forEach((client, i) => {
        if (client === id && this.u.series[i].show !== visible) this.u.setSeries(i, { show: visible });
      });
      this.applying = false;
    }

    resize() {
      const width = innerWidth(this.u.root.parentElement);
      if (Math.abs(width - this.u.width) > 2) this.u.setSize({ width, height: this.u.height });
    }

    destroy() {
      this.u.destroy();
    }
  }

  window.trackbridgeCharts = { MetricChart, assignColors, color, fmt, setText, smooth };
})();
