// gymsite's dashboard: copy buttons, and an instance page's live parts (the frame,
// refreshed every half second, and the episode-return chart and counters, redrawn
// from the instance summary every second), both stopping once the instance is closed.
// Plain JavaScript, no build step; the admin's instance page uses it too.
(function () {
  "use strict";
  var FRAME_EVERY = 500;
  var SUMMARY_EVERY = 1000;
  var SVG = "http://www.w3.org/2000/svg";

  function fresh(url) {
    return url + (url.indexOf("?") < 0 ? "?" : "&") + "t=" + Date.now();
  }

  function active(live) {
    return live.dataset.status === "active";
  }

  // --- the frame: load the next one off-screen, then swap it in (no flicker) -----
  function watchImage(live, url) {
    function next() {
      if (!active(live)) return;
      var probe = new Image();
      probe.onload = function () {
        var shown = document.getElementById("frame");
        probe.id = "frame";
        probe.className = shown.className;
        probe.alt = shown.alt;
        shown.replaceWith(probe);
        toggle("frame-note", false);
        setTimeout(next, FRAME_EVERY);
      };
      probe.onerror = function () {
        toggle("frame-note", true); // no frame before the first reset
        setTimeout(next, 2 * FRAME_EVERY);
      };
      probe.src = fresh(url);
    }
    next();
  }

  function watchText(live, url) {
    function next() {
      if (!active(live)) return;
      fetch(fresh(url), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : "(no frame yet: reset the instance)"; })
        .then(function (text) { showText(document.getElementById("frame"), text); })
        .catch(function () {})
        .then(function () { setTimeout(next, FRAME_EVERY); });
    }
    next();
  }

  // ANSI text: its colour codes (FrozenLake's agent has a red background) as <mark>.
  function showText(pre, text) {
    var marked = false;
    pre.replaceChildren();
    text.split(/\x1b\[([0-9;]*)m/).forEach(function (part, i) {
      if (i % 2) { marked = part !== "" && part !== "0"; return; }
      if (!part) return;
      var node = marked ? document.createElement("mark") : document.createTextNode(part);
      if (marked) node.textContent = part;
      pre.appendChild(node);
    });
  }

  function toggle(id, shown) {
    var el = document.getElementById(id);
    if (el) el.hidden = !shown;
  }

  // --- the chart: one bar per ended episode, oldest first ----------------------
  function drawChart(svg, episodes, live) {
    var W = 600, H = 200, pad = 24;
    var values = episodes.map(function (e) { return e["return"]; });
    svg.replaceChildren();
    svg.dataset.points = values.length;
    if (!values.length) {
      add(svg, "text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "note" })
        .textContent = live ? "no episode has ended yet"
          : "no returns to show: they are kept while the instance is live here";
      return;
    }
    var lo = Math.min(0, Math.min.apply(null, values));
    var hi = Math.max(0, Math.max.apply(null, values));
    var span = hi - lo || 1;
    var y = function (v) { return pad + (hi - v) / span * (H - 2 * pad); };
    var w = (W - 2 * pad) / values.length;
    values.forEach(function (v, i) {
      var bar = add(svg, "rect", {
        x: pad + i * w, width: Math.max(1, w - 1),
        y: Math.min(y(v), y(0)), height: Math.max(1, Math.abs(y(v) - y(0))),
        "class": "bar",
      });
      add(bar, "title", {}).textContent = "episode " + (i + 1) + ": return " + num(v);
    });
    add(svg, "line", { x1: pad, x2: W - pad, y1: y(0), y2: y(0), "class": "axis" });
    add(svg, "text", { x: 2, y: pad - 8, "class": "note" }).textContent = num(hi);
    add(svg, "text", { x: 2, y: H - 6, "class": "note" })
      .textContent = values.length + " episode" + (values.length > 1 ? "s" : "") + ", last " + num(values[values.length - 1]);
  }

  function add(parent, tag, attributes) {
    var el = document.createElementNS(SVG, tag);
    Object.keys(attributes).forEach(function (k) { el.setAttribute(k, attributes[k]); });
    parent.appendChild(el);
    return el;
  }

  function num(v) {
    if (Array.isArray(v)) return v.map(num).join(", "); // a vector's sub-envs
    if (v === null || v === undefined) return "-";
    return Number.isInteger(v) ? String(v) : Number(v).toFixed(2);
  }

  // --- the counters and the status ---------------------------------------------
  function show(live, summary) {
    live.querySelectorAll("[data-field]").forEach(function (el) {
      var value = el.dataset.field.split(".").reduce(function (o, k) {
        return o === null || o === undefined ? o : o[k];
      }, summary);
      if (el.dataset.format === "time" && value) {
        value = new Date(value).toISOString().slice(0, 19).replace("T", " ") + " UTC";
      } else if (typeof value === "number" || Array.isArray(value)) {
        value = num(value);
      }
      el.textContent = value === null || value === undefined || value === "" ? "-" : value;
    });
    var status = live.querySelector(".status");
    if (status) status.className = "status " + summary.status;
    var chart = document.getElementById("chart");
    if (chart) drawChart(chart, summary.episodes || [], summary.live);
    if (summary.status !== "active") {
      live.dataset.status = summary.status;
      live.querySelectorAll(".buttons").forEach(function (el) { el.remove(); });
      var note = live.querySelector(".closed-note");
      if (note) {
        note.textContent = "This instance is " + summary.status +
          (summary.close_reason ? " (" + summary.close_reason + ")" : "") + ".";
        note.hidden = false;
      }
    }
  }

  function watchSummary(live, url) {
    function next() {
      if (!active(live)) return;
      fetch(fresh(url), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (summary) { if (summary) show(live, summary); })
        .catch(function () {})
        .then(function () { setTimeout(next, SUMMARY_EVERY); });
    }
    next();
  }

  function startLive(live) {
    var chart = document.getElementById("chart");
    var initial = document.getElementById("episodes");
    if (chart && initial) {
      drawChart(chart, JSON.parse(initial.textContent) || [], live.dataset.live === "true");
    }
    if (!active(live)) return;
    if (live.dataset.frameKind === "rgb_array") watchImage(live, live.dataset.frameUrl);
    if (live.dataset.frameKind === "ansi") watchText(live, live.dataset.frameUrl);
    watchSummary(live, live.dataset.summaryUrl);
  }

  // --- copy buttons --------------------------------------------------------------
  function copy(button) {
    var text = document.getElementById(button.dataset.copy).textContent;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else { // plain http to another host: select it for Ctrl-C
      var range = document.createRange();
      range.selectNodeContents(document.getElementById(button.dataset.copy));
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-copy]").forEach(function (b) {
      b.addEventListener("click", function () { copy(b); });
    });
    document.querySelectorAll(".live[data-summary-url]").forEach(startLive);
  });
})();
