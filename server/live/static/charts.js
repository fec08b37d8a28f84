// trackbridge live view: inline SVG line charts and the small helpers the page shares.
// Loaded before app.js; exposes window.trackbridgeCharts.
"use strict";

(() => {
  const MAX_DRAWN = 250; // points per line drawn: about what a chart has room for
  const SVG_NS = "http://www.w3.org/2000/svg";
  const VIEW_W = 1000;
  const VIEW_H = 300;

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function color(id) {
    let hash = 0;
    for (const ch of id) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    return `hsl(${(hash * 137.508) % 360}, 65%, 42%)`;
  }

  function fmt(value) {
    const v = Number(value);
    if (Number.isNaN(v)) return "NaN";
    if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
    if (Number.isInteger(v)) return String(v);
    return String(Number(v.toPrecision(5)));
  }

  // An empty chart of one metric with a line per client (data-key, data-client for tests).
  function chartSvg(key, ids) {
    const chart = svg("svg", {
      class: "chart",
      viewBox: `0 0 ${VIEW_W} ${VIEW_H}`,
      preserveAspectRatio: "none",
      "data-key": key,
    });
    chart.append(svg("line", { class: "axis", x1: 0, y1: VIEW_H, x2: VIEW_W, y2: VIEW_H }));
    for (const id of ids) {
      chart.append(svg("polyline", { "data-client": id, stroke: color(id), points: "" }));
    }
    return chart;
  }

  // The scale that fits every given series ({s, v, t, version} or undefined) of one metric.
  function domainOf(list) {
    const data = list.filter(Boolean);
    const version = list.map((s) => (s === undefined ? -1 : s.version)).join(",");
    let stepMin = Infinity;
    let stepMax = -Infinity;
    let yMin = Infinity;
    let yMax = -Infinity;
    for (const s of data) {
      for (let i = 0; i < s.s.length; i += 1) {
        stepMin = Math.min(stepMin, s.s[i]);
        stepMax = Math.max(stepMax, s.s[i]);
        if (Number.isFinite(s.v[i])) {
          yMin = Math.min(yMin, s.v[i]);
          yMax = Math.max(yMax, s.v[i]);
        }
      }
    }
    // A metric logged without steps (all 0) is drawn against time instead.
    const useTime = stepMin === stepMax;
    let xMin = Infinity;
    let xMax = -Infinity;
    for (const s of data) {
      for (const x of useTime ? s.t : s.s) {
        xMin = Math.min(xMin, x);
        xMax = Math.max(xMax, x);
      }
    }
    if (yMin === yMax) {
      yMin -= 1;
      yMax += 1;
    }
    return { version, useTime, xMin, xMax, yMin, yMax };
  }

  // Redraws a chart's lines when their data or scale changed; seriesFor(client, key).
  function drawChart(chart, domain, seriesFor) {
    if (chart.dataset.version === domain.version) return;
    chart.dataset.version = domain.version;
    const key = chart.dataset.key;
    const { useTime, xMin, xMax, yMin, yMax } = domain;
    const xSpan = xMax > xMin ? xMax - xMin : 1;
    const ySpan = yMax - yMin;
    for (const line of chart.querySelectorAll("polyline")) {
      const s = seriesFor(line.dataset.client, key);
      if (s === undefined) continue;
      const x = useTime ? s.t : s.s;
      // Never more points than the chart has room for (the last one always).
      const stride = Math.max(1, Math.ceil(x.length / MAX_DRAWN));
      const picked = [];
      for (let i = 0; i < x.length; i += stride) picked.push(i);
      if (x.length > 0 && picked[picked.length - 1] !== x.length - 1) picked.push(x.length - 1);
      const out = [];
      for (const i of picked) {
        if (!Number.isFinite(s.v[i])) continue;
        const px = ((x[i] - xMin) / xSpan) * VIEW_W;
        const py = VIEW_H - ((s.v[i] - yMin) / ySpan) * (VIEW_H - 10) - 5;
        out.push(`${px.toFixed(1)},${py.toFixed(1)}`);
      }
      line.setAttribute("points", out.join(" "));
      line.dataset.points = String(out.length);
    }
    const labels = chart.parentElement.querySelector(".chart-labels");
    if (labels !== null && Number.isFinite(yMin)) {
      const axis = useTime ? "time" : `step ${xMin}–${xMax}`;
      setText(labels, `${axis} · ${fmt(yMin)} … ${fmt(yMax)}`);
    }
  }

  window.trackbridgeCharts = { chartSvg, color, domainOf, drawChart, fmt, setText, svg };
})();
