/*
 * vit-explorer: click any patch, see where it looks, in every block and head.
 *
 * Plain JavaScript, no dependencies, no build step, no request to any other host. Data files are
 * loaded with <script> elements (they call VitExplorer.register / registerManifest), which works
 * both served and from file://. Written by generator/explorer.py; the format is documented there.
 *
 * Markup:  <div class="vit-explorer" data-manifest="explorer/<model>/<image>/manifest.js"
 *                data-key="<model>--<image>"></div>
 *   data-manifest is relative to the site root, which is taken from this script's own URL
 *   (<root>/assets/vit-explorer/explorer.js); set VitExplorer.root before init to override.
 *
 * Overlay pixels (deterministic, for tests): the overlay canvas has one pixel per patch of the map
 * grid (h × w), scaled up by CSS (image-rendering: pixelated). Pixel (r, c) has the colour
 * colormap[I] with alpha 255, where I = round(255 · min(1, value / scale)) (0 when scale is 0),
 * value = the map's value at patch (r, c) and scale = the map's max ("map"), the max over all head
 * maps of the block for this query ("heads"), or the fixed value vmax ("fixed").
 *
 * URL state (hash, one group of entries per explorer, other explorers' entries kept):
 *   #<key>.block=3&<key>.head=mean&<key>.query=2,5&<key>.mode=raw&<key>.scale=map
 *    &<key>.vmax=1&<key>.cmap=viridis&<key>.opacity=0.6
 *   block, head: 0-based; head ∈ {0…H−1, mean, max}; query: "r,c" (0-based row, column on the
 *   block's grid) or the lower-case prefix token name ("cls"); mode ∈ {raw, rollout};
 *   scale ∈ {map, heads, fixed}; cmap ∈ {viridis, gray}; opacity ∈ [0, 1].
 */
(function () {
  "use strict";
  if (window.VitExplorer && window.VitExplorer.version) return; // loaded twice (instant navigation)

  var SCRIPT_URL = (document.currentScript && document.currentScript.src) || document.baseURI;
  var blockData = new Map();  // registry key -> base64 string
  var manifests = new Map();  // manifest key -> manifest object
  var loading = new Map();    // absolute URL -> Promise
  var decoded = new Map();    // registry key -> decoded block
  var instances = [];
  var requested = [];

  var SQ = new Float64Array(256);
  for (var i = 0; i < 256; i++) SQ[i] = (i / 255) * (i / 255);

  // ------------------------------------------------------------------------------------------
  // colour maps: 256 entries of [r, g, b]

  var VIRIDIS_STOPS = [
    [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]
  ];
  var COLORMAPS = {
    gray: Array.from({ length: 256 }, function (_, k) { return [k, k, k]; }),
    viridis: Array.from({ length: 256 }, function (_, k) {
      var t = k / 255 * (VIRIDIS_STOPS.length - 1), j = Math.min(Math.floor(t), VIRIDIS_STOPS.length - 2), f = t - j;
      var a = VIRIDIS_STOPS[j], b = VIRIDIS_STOPS[j + 1];
      return [0, 1, 2].map(function (ch) { return Math.round(a[ch] + (b[ch] - a[ch]) * f); });
    })
  };
  // every colour map is one-to-one, so a test can read the intensity back from a pixel: an entry
  // that repeats an earlier colour has its green channel raised by one (once, at index 104 of viridis)
  Object.keys(COLORMAPS).forEach(function (name) {
    var seen = {};
    COLORMAPS[name].forEach(function (c) {
      while (seen[c.join()] && c[1] < 255) c[1] += 1;
      seen[c.join()] = true;
    });
  });

  // ------------------------------------------------------------------------------------------
  // loading and decoding

  function loadScript(url, ready) {
    if (ready()) return Promise.resolve();
    if (loading.has(url)) return loading.get(url);
    var p = new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = url;
      s.async = true;
      s.onload = function () {
        if (ready()) resolve();
        else { loading.delete(url); reject(new Error("vit-explorer: " + url + " registered nothing")); }
      };
      s.onerror = function () { loading.delete(url); s.remove(); reject(new Error("vit-explorer: cannot load " + url)); };
      requested.push(url);
      document.head.appendChild(s);
    });
    loading.set(url, p);
    return p;
  }

  function float16(u) {
    var sign = (u & 0x8000) ? -1 : 1, e = (u >> 10) & 0x1f, f = u & 0x3ff;
    if (e === 0) return sign * f * Math.pow(2, -24);
    if (e === 31) return f ? NaN : sign * Infinity;
    return sign * (1 + f / 1024) * Math.pow(2, e - 15);
  }

  function decodeBlock(b64, info) {
    var bin = atob(b64), n = bin.length, bytes = new Uint8Array(n);
    for (var i = 0; i < n; i++) bytes[i] = bin.charCodeAt(i);
    var H = info.heads, N = info.tokens, HN = H * N, k = info.top_k;
    var expected = 2 * HN + (k == null ? HN * N : 3 * HN * k);
    if (n !== expected) throw new Error("vit-explorer: block " + info.index + " has " + n + " bytes, expected " + expected);
    var maxima = new Float64Array(HN);
    for (var j = 0; j < HN; j++) maxima[j] = float16(bytes[2 * j] | (bytes[2 * j + 1] << 8));
    var keys = null, codes;
    if (k == null) {
      codes = bytes.subarray(2 * HN);
    } else {
      keys = new Uint16Array(HN * k);
      for (var m = 0; m < HN * k; m++) keys[m] = bytes[2 * HN + 2 * m] | (bytes[2 * HN + 2 * m + 1] << 8);
      codes = bytes.subarray(2 * HN + 2 * HN * k);
    }
    return { info: info, H: H, N: N, k: k, maxima: maxima, codes: codes, keys: keys, rollStep: null };
  }

  /** Decoded attention row of head h, query q: Float64Array(N), value = (code/255)^2 * rowmax. */
  function headRow(blk, h, q) {
    var N = blk.N, out = new Float64Array(N), m = blk.maxima[h * N + q], j;
    if (blk.k == null) {
      var base = (h * N + q) * N;
      for (j = 0; j < N; j++) out[j] = SQ[blk.codes[base + j]] * m;
    } else {
      var kb = (h * N + q) * blk.k;
      for (j = 0; j < blk.k; j++) out[blk.keys[kb + j]] = SQ[blk.codes[kb + j]] * m;
    }
    return out;
  }

  /** Row for a head option: an int head, "mean" or "max" over heads. */
  function optionRow(blk, head, q) {
    if (typeof head === "number") return headRow(blk, head, q);
    var out = new Float64Array(blk.N), h, j, r;
    if (head === "max") out.fill(-Infinity);
    for (h = 0; h < blk.H; h++) {
      r = headRow(blk, h, q);
      for (j = 0; j < blk.N; j++) out[j] = head === "max" ? Math.max(out[j], r[j]) : out[j] + r[j];
    }
    if (head === "mean") for (j = 0; j < blk.N; j++) out[j] /= blk.H;
    return out;
  }

  /** The rollout step of a block: rownorm(mean_heads(A) + I), N×N row-major (cached). */
  function rolloutStep(blk) {
    if (blk.rollStep) return blk.rollStep;
    var N = blk.N, M = new Float64Array(N * N), q, j;
    for (q = 0; q < N; q++) {
      var r = optionRow(blk, "mean", q), s = 0;
      r[q] += 1;
      for (j = 0; j < N; j++) s += r[j];
      for (j = 0; j < N; j++) M[q * N + j] = r[j] / s;
    }
    blk.rollStep = M;
    return M;
  }

  /** Row `token` of R_b = M_b · L · M_{b-1} ⋯ M_0 (L: 2×2 patch merging where the grid shrinks). */
  function rolloutRow(blocks, b, token) {
    var v = new Float64Array(blocks[b].N), l, j, k;
    v[token] = 1;
    for (l = b; l >= 0; l--) {
      var M = rolloutStep(blocks[l]), N = blocks[l].N, u = new Float64Array(N);
      for (j = 0; j < N; j++) {
        var vj = v[j];
        if (vj === 0) continue;
        var base = j * N;
        for (k = 0; k < N; k++) u[k] += vj * M[base + k];
      }
      v = u;
      if (l > 0) {
        var g = blocks[l].info.grid, gp = blocks[l - 1].info.grid;
        if (g[0] !== gp[0] || g[1] !== gp[1]) {
          if (gp[0] !== 2 * g[0] || gp[1] !== 2 * g[1]) throw new Error("vit-explorer: grid " + gp + " → " + g + " is not 2×2 merging");
          var w = new Float64Array(gp[0] * gp[1]);
          for (var r = 0; r < gp[0]; r++) for (var c = 0; c < gp[1]; c++)
            w[r * gp[1] + c] = v[(r >> 1) * g[1] + (c >> 1)] / 4;
          v = w;
        }
      }
    }
    return v;
  }

  // ------------------------------------------------------------------------------------------
  // URL state

  var KEYS = ["block", "head", "query", "mode", "scale", "vmax", "cmap", "opacity"];

  function readHash() {
    var out = new Map(), h = location.hash.replace(/^#/, "");
    if (h.indexOf("=") < 0) return out;
    h.split("&").forEach(function (part) {
      var eq = part.indexOf("=");
      if (eq > 0) {
        try { out.set(decodeURIComponent(part.slice(0, eq)), decodeURIComponent(part.slice(eq + 1))); } catch (e) { /* ignore */ }
      }
    });
    return out;
  }

  function writeHash(key, values) {
    var entries = readHash(), prefix = key + ".";
    Array.from(entries.keys()).forEach(function (k) { if (k.indexOf(prefix) === 0) entries.delete(k); });
    KEYS.forEach(function (k) { entries.set(prefix + k, String(values[k])); });
    var text = Array.from(entries).map(function (kv) {
      return encodeURIComponent(kv[0]).replace(/%2C/gi, ",") + "=" + encodeURIComponent(kv[1]).replace(/%2C/gi, ",");
    }).join("&");
    try { history.replaceState(history.state, "", "#" + text); } catch (e) { /* some file:// setups refuse */ }
  }

  // ------------------------------------------------------------------------------------------
  // the explorer

  function el(tag, attrs, parent) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "class") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    if (parent) parent.appendChild(e);
    return e;
  }

  function cssVar(node, name, fallback) {
    var v = getComputedStyle(node).getPropertyValue(name);
    return v && v.trim() ? v.trim() : fallback;
  }

  function Explorer(root) {
    this.root = root;
    this.key = root.getAttribute("data-key") || "";
    this.manifestUrl = new URL(root.getAttribute("data-manifest"), VitExplorer.root).href;
    this.folderUrl = new URL(".", this.manifestUrl).href;
    this.rendered = 0;
    this.pending = true;
    this.renderToken = 0;
    this.prefetchOn = false;
    this.last = null;
    root.setAttribute("data-vx-init", "1");
  }

  Explorer.prototype.start = function () {
    var self = this;
    return loadScript(this.manifestUrl, function () { return manifests.has(self.key); }).then(function () {
      self.m = manifests.get(self.key);
      if (!self.key) throw new Error("vit-explorer: data-key missing");
      self.build();
      self.state = self.defaults();
      self.applyHash();
      self.syncControls();
      return self.render(false);
    }).catch(function (err) { self.fail(err); });
  };

  Explorer.prototype.fail = function (err) {
    this.pending = false;
    this.root.setAttribute("data-vx-error", String(err && err.message || err));
    var p = this.root.querySelector(".vx-status") || el("p", { class: "vx-status" }, this.root);
    p.textContent = "The attention explorer could not load its data: " + (err && err.message || err);
    if (window.console) console.warn(err);
  };

  Explorer.prototype.blockKey = function (b) { return this.key + "/b" + b; };

  Explorer.prototype.loadBlock = function (b) {
    var self = this, k = this.blockKey(b);
    if (decoded.has(k)) return Promise.resolve(decoded.get(k));
    var url = new URL(this.m.blocks[b].file, this.folderUrl).href;
    return loadScript(url, function () { return blockData.has(k); }).then(function () {
      if (!decoded.has(k)) {
        decoded.set(k, decodeBlock(blockData.get(k), self.m.blocks[b]));
        blockData.delete(k); // keep only the decoded copy
      }
      return decoded.get(k);
    });
  };

  Explorer.prototype.defaults = function () {
    var m = this.m, last = m.blocks.length - 1, g = m.blocks[last].grid;
    var cls = m.prefix_tokens.indexOf("CLS");
    return {
      block: last, head: "mean", mode: "raw", scale: "map", vmax: 1, cmap: "viridis", opacity: 0.6,
      query: cls >= 0 ? { type: "prefix", index: cls } : { type: "patch", r: g[0] >> 1, c: g[1] >> 1 }
    };
  };

  Explorer.prototype.applyHash = function () {
    var h = readHash(), p = this.key + ".", s = this.state, m = this.m;
    if (!Array.from(h.keys()).some(function (k) { return k.indexOf(p) === 0; })) return false;
    var get = function (k) { return h.get(p + k); };
    var b = parseInt(get("block"), 10);
    if (b >= 0 && b < m.blocks.length) s.block = b;
    var head = get("head");
    if (head === "mean" || head === "max") s.head = head;
    else if (/^\d+$/.test(head || "") && +head < m.blocks[s.block].heads) s.head = +head;
    if (get("mode") === "raw" || get("mode") === "rollout") s.mode = get("mode");
    if (["map", "heads", "fixed"].indexOf(get("scale")) >= 0) s.scale = get("scale");
    var vmax = parseFloat(get("vmax"));
    if (vmax > 0 && isFinite(vmax)) s.vmax = vmax;
    if (COLORMAPS[get("cmap")]) s.cmap = get("cmap");
    var op = parseFloat(get("opacity"));
    if (op >= 0 && op <= 1) s.opacity = op;
    var q = (get("query") || "").toLowerCase(), names = m.prefix_tokens.map(function (n) { return n.toLowerCase(); });
    var g = m.blocks[s.block].grid, rc = /^(\d+),(\d+)$/.exec(q);
    if (names.indexOf(q) >= 0) s.query = { type: "prefix", index: names.indexOf(q) };
    else if (rc && +rc[1] < g[0] && +rc[2] < g[1]) s.query = { type: "patch", r: +rc[1], c: +rc[2] };
    return true;
  };

  Explorer.prototype.hashValues = function () {
    var s = this.state, q = s.query;
    return {
      block: s.block, head: s.head, mode: s.mode, scale: s.scale, vmax: s.vmax, cmap: s.cmap, opacity: s.opacity,
      query: q.type === "prefix" ? this.m.prefix_tokens[q.index].toLowerCase() : q.r + "," + q.c
    };
  };

  Explorer.prototype.build = function () {
    var self = this, m = this.m, root = this.root, label = root.getAttribute("aria-label") || "Attention explorer";
    root.textContent = "";
    root.classList.add("vx-ready");
    root.setAttribute("role", "region");
    var controls = el("div", { class: "vx-controls" }, root);
    var lab = function (text) { var l = el("label", { class: "vx-control" }, controls); el("span", { text: text }, l); return l; };
    this.blockInput = el("input", { type: "range", class: "vx-block", min: 0, max: m.blocks.length - 1, step: 1, "aria-label": "Block" }, lab("Block"));
    this.blockLabel = el("output", { class: "vx-block-label" }, this.blockInput.parentNode);
    this.headSelect = el("select", { class: "vx-head", "aria-label": "Head" }, lab("Head"));
    this.modeSelect = el("select", { class: "vx-mode", "aria-label": "Show" }, lab("Show"));
    el("option", { value: "raw", text: "attention in this block" }, this.modeSelect);
    el("option", { value: "rollout", text: "rollout up to this block" }, this.modeSelect);
    this.querySelect = el("select", { class: "vx-query", "aria-label": "Query" }, lab("Query"));
    el("option", { value: "patch", text: "the chosen patch" }, this.querySelect);
    m.prefix_tokens.forEach(function (n, i) { el("option", { value: "prefix:" + i, text: n + " token" }, self.querySelect); });
    if (!m.prefix_tokens.length) this.querySelect.parentNode.hidden = true;
    var scaleLabel = lab("Colour scale");
    this.scaleSelect = el("select", { class: "vx-scale", "aria-label": "Colour scale" }, scaleLabel);
    el("option", { value: "map", text: "max of each map" }, this.scaleSelect);
    el("option", { value: "heads", text: "max over heads" }, this.scaleSelect);
    el("option", { value: "fixed", text: "fixed" }, this.scaleSelect);
    this.vmaxInput = el("input", { type: "number", class: "vx-vmax", min: 0, step: "any", "aria-label": "Fixed scale maximum" }, scaleLabel);
    this.cmapSelect = el("select", { class: "vx-cmap", "aria-label": "Colour map" }, lab("Colours"));
    Object.keys(COLORMAPS).sort().reverse().forEach(function (n) { el("option", { value: n, text: n }, self.cmapSelect); });
    this.opacityInput = el("input", { type: "range", class: "vx-opacity", min: 0, max: 100, step: 1, "aria-label": "Overlay opacity" }, lab("Opacity"));
    var follow = el("label", { class: "vx-control vx-follow-label" }, controls);
    this.followInput = el("input", { type: "checkbox", class: "vx-follow" }, follow);
    el("span", { text: "follow pointer" }, follow);

    var body = el("div", { class: "vx-body" }, root);
    var figure = el("div", { class: "vx-figure" }, body);
    this.stage = el("div", { class: "vx-stage" }, figure);
    this.stage.style.aspectRatio = m.image_size[1] + " / " + m.image_size[0];
    this.image = el("img", { class: "vx-image", alt: "The image the model sees, under the attention overlay", src: new URL(m.image_file, this.folderUrl).href, draggable: "false" }, this.stage);
    this.overlay = el("canvas", { class: "vx-overlay", tabindex: 0, role: "img" }, this.stage);
    this.lines = el("canvas", { class: "vx-lines", "aria-hidden": "true" }, this.stage);
    this.caption = el("p", { class: "vx-caption" }, figure);
    this.headsBox = el("div", { class: "vx-heads", role: "group", "aria-label": label + ": every head of the block" }, body);
    this.status = el("p", { class: "vx-status", "aria-live": "polite" }, root);

    var change = function (fn) { return function (ev) { fn(ev); self.changed(); }; };
    var touchBlocks = function () { if (!self.prefetchOn) { self.prefetchOn = true; self.prefetch(); } };
    this.blockInput.addEventListener("pointerdown", touchBlocks);
    this.blockInput.addEventListener("focus", touchBlocks);
    this.blockInput.addEventListener("input", change(function () {
      var b = +self.blockInput.value, old = self.m.blocks[self.state.block].grid, g = self.m.blocks[b].grid, q = self.state.query;
      if (q.type === "patch" && (old[0] !== g[0] || old[1] !== g[1])) {
        q.r = Math.min(g[0] - 1, Math.floor((q.r + 0.5) * g[0] / old[0]));
        q.c = Math.min(g[1] - 1, Math.floor((q.c + 0.5) * g[1] / old[1]));
      }
      self.state.block = b;
      if (typeof self.state.head === "number" && self.state.head >= self.m.blocks[b].heads) self.state.head = "mean";
      self.prefetchOn = true;
    }));
    this.headSelect.addEventListener("change", change(function () {
      var v = self.headSelect.value; self.state.head = /^\d+$/.test(v) ? +v : v;
    }));
    this.modeSelect.addEventListener("change", change(function () { self.state.mode = self.modeSelect.value; }));
    this.querySelect.addEventListener("change", change(function () {
      var v = self.querySelect.value, g = self.grid();
      self.state.query = v === "patch" ? { type: "patch", r: g[0] >> 1, c: g[1] >> 1 } : { type: "prefix", index: +v.split(":")[1] };
    }));
    this.scaleSelect.addEventListener("change", change(function () { self.state.scale = self.scaleSelect.value; }));
    this.vmaxInput.addEventListener("change", change(function () {
      var v = parseFloat(self.vmaxInput.value); if (v > 0 && isFinite(v)) self.state.vmax = v;
    }));
    this.cmapSelect.addEventListener("change", change(function () { self.state.cmap = self.cmapSelect.value; }));
    this.opacityInput.addEventListener("input", change(function () { self.state.opacity = +self.opacityInput.value / 100; }));

    var cellAt = function (ev) {
      var rect = self.overlay.getBoundingClientRect(), g = self.grid();
      if (!rect.width || !rect.height) return null;
      var r = Math.floor((ev.clientY - rect.top) / rect.height * g[0]), c = Math.floor((ev.clientX - rect.left) / rect.width * g[1]);
      return { type: "patch", r: Math.max(0, Math.min(g[0] - 1, r)), c: Math.max(0, Math.min(g[1] - 1, c)) };
    };
    var setQuery = function (q) {
      var old = self.state.query;
      if (!q || (old.type === "patch" && old.r === q.r && old.c === q.c)) return;
      self.state.query = q;
      self.changed();
    };
    this.overlay.addEventListener("click", function (ev) { setQuery(cellAt(ev)); self.overlay.focus(); });
    this.overlay.addEventListener("pointermove", function (ev) { if (self.followInput.checked) setQuery(cellAt(ev)); });
    this.overlay.addEventListener("keydown", function (ev) {
      var d = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[ev.key];
      if (!d) return;
      ev.preventDefault();
      var g = self.grid(), q = self.state.query;
      if (q.type !== "patch") { setQuery({ type: "patch", r: g[0] >> 1, c: g[1] >> 1 }); return; }
      setQuery({ type: "patch", r: Math.max(0, Math.min(g[0] - 1, q.r + d[0])), c: Math.max(0, Math.min(g[1] - 1, q.c + d[1])) });
    });
    if (window.ResizeObserver) {
      this.resizer = new ResizeObserver(function () { self.drawLines(); });
      this.resizer.observe(this.stage);
    }
  };

  /** The query's grid: the chosen block's token grid. */
  Explorer.prototype.grid = function () { return this.m.blocks[this.state.block].grid; };

  Explorer.prototype.queryToken = function () {
    var q = this.state.query, g = this.grid();
    return q.type === "prefix" ? q.index : this.m.prefix_tokens.length + q.r * g[1] + q.c;
  };

  Explorer.prototype.queryText = function () {
    var q = this.state.query;
    return q.type === "prefix" ? this.m.prefix_tokens[q.index] + " token" : "patch (row " + q.r + ", column " + q.c + ")";
  };

  Explorer.prototype.syncControls = function () {
    var s = this.state, m = this.m, blk = m.blocks[s.block], self = this;
    this.blockInput.value = s.block;
    this.blockLabel.textContent = s.block + " / " + (m.blocks.length - 1) +
      (blk.window ? " (stage " + blk.stage + ", block " + blk.block_in_stage + (blk.shift && (blk.shift[0] || blk.shift[1]) ? ", shifted" : "") + ")" : "");
    if (+this.headSelect.getAttribute("data-heads") !== blk.heads) {
      this.headSelect.textContent = "";
      for (var h = 0; h < blk.heads; h++) el("option", { value: String(h), text: "head " + h }, this.headSelect);
      el("option", { value: "mean", text: "mean of heads" }, this.headSelect);
      el("option", { value: "max", text: "max over heads" }, this.headSelect);
      this.headSelect.setAttribute("data-heads", blk.heads);
    }
    this.headSelect.value = String(s.head);
    this.headSelect.disabled = s.mode === "rollout";
    this.modeSelect.value = s.mode;
    this.querySelect.value = s.query.type === "prefix" ? "prefix:" + s.query.index : "patch";
    this.scaleSelect.value = s.scale;
    this.vmaxInput.value = s.vmax;
    this.vmaxInput.hidden = s.scale !== "fixed";
    this.cmapSelect.value = s.cmap;
    this.opacityInput.value = Math.round(s.opacity * 100);
    this.overlay.style.opacity = s.opacity;
    Array.prototype.forEach.call(this.headsBox.querySelectorAll("button"), function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-head") === String(self.state.head)));
    });
  };

  Explorer.prototype.changed = function () {
    this.syncControls();
    writeHash(this.key, this.hashValues());
    this.render(true);
  };

  Explorer.prototype.prefetch = function () {
    var self = this, b = this.state.block, n = this.m.blocks.length;
    [b + 1, b - 1].forEach(function (x) { if (x >= 0 && x < n) self.loadBlock(x).catch(function () { /* shown when needed */ }); });
  };

  /** Values over the map grid (patch keys only) for a head option (raw) or the rollout row. */
  Explorer.prototype.mapValues = function (blocks, head) {
    var s = this.state, P = this.m.prefix_tokens.length, token = this.queryToken(), row;
    if (s.mode === "rollout") row = rolloutRow(blocks, s.block, token);
    else row = optionRow(blocks[s.block], head, token);
    return { all: row, patches: Array.prototype.slice.call(row, P) };
  };

  Explorer.prototype.render = function (interactive) {
    var self = this, s = this.state, token = ++this.renderToken;
    var need = s.mode === "rollout" ? Array.from({ length: s.block + 1 }, function (_, i) { return i; }) : [s.block];
    this.pending = true;
    this.root.setAttribute("data-vx-pending", "1");
    var waiting = need.some(function (b) { return !decoded.has(self.blockKey(b)); });
    if (waiting) this.status.textContent = "Loading " + (need.length > 1 ? "blocks 0–" + s.block : "block " + s.block) + "…";
    return Promise.all(need.map(function (b) { return self.loadBlock(b); })).then(function (list) {
      if (token !== self.renderToken) return;
      var blocks = [];
      need.forEach(function (b, i) { blocks[b] = list[i]; });
      self.draw(blocks);
      self.pending = false;
      self.rendered += 1;
      self.root.removeAttribute("data-vx-pending");
      self.root.setAttribute("data-vx-rendered", String(self.rendered));
      if (interactive && self.prefetchOn) self.prefetch();
    }).catch(function (err) { if (token === self.renderToken) self.fail(err); });
  };

  function paint(canvas, values, grid, scale, cmap) {
    var lut = COLORMAPS[cmap], h = grid[0], w = grid[1], intensities = new Array(h * w);
    if (canvas.width !== w) canvas.width = w;
    if (canvas.height !== h) canvas.height = h;
    // willReadFrequently: these canvases are tiny (one pixel per patch) and tests read them back
    var ctx = canvas.getContext("2d", { willReadFrequently: true }), img = ctx.createImageData(w, h);
    for (var i = 0; i < h * w; i++) {
      var I = scale > 0 ? Math.round(255 * Math.min(1, values[i] / scale)) : 0, c = lut[I];
      intensities[i] = I;
      img.data[4 * i] = c[0]; img.data[4 * i + 1] = c[1]; img.data[4 * i + 2] = c[2]; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    return intensities;
  }

  function maxOf(a) { var m = 0; for (var i = 0; i < a.length; i++) if (a[i] > m) m = a[i]; return m; }

  Explorer.prototype.draw = function (blocks) {
    var self = this, s = this.state, m = this.m, blk = blocks[s.block], info = m.blocks[s.block];
    var mapGrid = s.mode === "rollout" ? m.blocks[0].grid : info.grid;
    var options = [];
    for (var h = 0; h < blk.H; h++) options.push(h);
    options.push("mean", "max");
    var main = this.mapValues(blocks, s.head), perHead = null;
    if (s.mode === "raw") perHead = options.map(function (o) { return { head: o, values: self.mapValues(blocks, o).patches }; });
    var headsMax = perHead ? Math.max.apply(null, perHead.map(function (p) { return maxOf(p.values); })) : maxOf(main.patches);
    var scaleOf = function (values) { return s.scale === "fixed" ? s.vmax : s.scale === "heads" ? headsMax : maxOf(values); };
    var scale = scaleOf(main.patches);
    var intensities = paint(this.overlay, main.patches, mapGrid, scale, s.cmap);

    // every head of the block, as small buttons (rebuilt; a focused one gets its focus back)
    var active = document.activeElement, refocus = active && this.headsBox.contains(active) ? active.getAttribute("data-head") : null;
    this.headsBox.textContent = "";
    this.headsBox.hidden = !perHead;
    var headStates = [];
    (perHead || []).forEach(function (p) {
      var name = typeof p.head === "number" ? "head " + p.head : p.head === "mean" ? "mean" : "max";
      var b = el("button", { type: "button", class: "vx-head-map", "data-head": String(p.head), "aria-pressed": String(p.head === s.head),
        "aria-label": "Show " + name }, self.headsBox);
      var c = el("canvas", { "aria-hidden": "true" }, b);
      c.style.aspectRatio = m.image_size[1] + " / " + m.image_size[0];
      el("span", { text: name }, b);
      var sc = scaleOf(p.values);
      headStates.push({ head: p.head, scale: sc, intensities: paint(c, p.values, mapGrid, sc, s.cmap) });
      b.addEventListener("click", function () { self.state.head = p.head; self.changed(); });
      if (refocus === String(p.head)) b.focus();
    });

    var P = m.prefix_tokens.length, prefixText = m.prefix_tokens.map(function (n, i) {
      return "to " + n + ": " + main.all[i].toFixed(3);
    }).join(", ");
    var what = s.mode === "rollout" ? "rollout up to block " + s.block + " (head mean, identity added, rows normalised)"
      : "block " + s.block + ", " + (typeof s.head === "number" ? "head " + s.head : s.head === "mean" ? "mean of heads" : "max over heads");
    var text = "Query " + this.queryText() + " · " + what + " · largest patch value " + maxOf(main.patches).toFixed(3) +
      (prefixText ? " · " + prefixText : "") + " · colour scale 0–" + scale.toPrecision(3);
    this.status.textContent = text;
    this.overlay.setAttribute("aria-label", "Attention map of " + this.queryText() + ", " + what +
      ". Click a patch or use the arrow keys to move the query.");
    this.caption.textContent = info.window && s.mode === "raw"
      ? "Lines: this block's windows" + (info.shift && (info.shift[0] || info.shift[1]) ? " (shifted by " + info.shift.join(", ") + "; a window that wraps round the edge is split by timm's mask)" : "") + "; thick: the query's window."
      : "";
    this.last = { values: main.patches, all: Array.prototype.slice.call(main.all), intensities: intensities, scale: scale,
      grid: mapGrid.slice(), heads: headStates, block: s.block, mode: s.mode, head: s.head };
    this.drawLines();
  };

  Explorer.prototype.drawLines = function () {
    if (!this.m || !this.last) return;
    var cv = this.lines, dpr = window.devicePixelRatio || 1, W = this.stage.clientWidth, H = this.stage.clientHeight;
    if (!W || !H) return;
    cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr);
    var ctx = cv.getContext("2d"), s = this.state, info = this.m.blocks[s.block], g = info.grid;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    var cw = W / g[1], ch = H / g[0];
    var seg = function (x0, y0, x1, y1) { ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); };
    if (info.window && s.mode === "raw") {
      var win = info.window, sh = info.shift || [0, 0], k;
      ctx.strokeStyle = cssVar(this.root, "--vx-window-color", "#fff");
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (k = 0; k < g[0] / win[0]; k++) { var y = ((k * win[0] + sh[0]) % g[0]) * ch; seg(0, y, W, y); }
      for (k = 0; k < g[1] / win[1]; k++) { var x = ((k * win[1] + sh[1]) % g[1]) * cw; seg(x, 0, x, H); }
      ctx.stroke();
      var q = s.query;
      if (q.type === "patch") {
        // the query's window in the image frame: rows (wy·wh + p + sh) mod H, likewise columns
        var wy = Math.floor(((q.r - sh[0] + g[0]) % g[0]) / win[0]), wx = Math.floor(((q.c - sh[1] + g[1]) % g[1]) / win[1]);
        var rows = {}, cols = {}, p;
        for (p = 0; p < win[0]; p++) rows[(wy * win[0] + p + sh[0]) % g[0]] = true;
        for (p = 0; p < win[1]; p++) cols[(wx * win[1] + p + sh[1]) % g[1]] = true;
        var inside = function (r, c) { return r >= 0 && c >= 0 && r < g[0] && c < g[1] && rows[r] && cols[c]; };
        ctx.lineWidth = 3;
        ctx.beginPath();
        for (var r = 0; r < g[0]; r++) for (var c = 0; c < g[1]; c++) {
          if (!inside(r, c)) continue;
          if (!inside(r - 1, c)) seg(c * cw, r * ch, (c + 1) * cw, r * ch);
          if (!inside(r + 1, c)) seg(c * cw, (r + 1) * ch, (c + 1) * cw, (r + 1) * ch);
          if (!inside(r, c - 1)) seg(c * cw, r * ch, c * cw, (r + 1) * ch);
          if (!inside(r, c + 1)) seg((c + 1) * cw, r * ch, (c + 1) * cw, (r + 1) * ch);
        }
        ctx.stroke();
      }
    }
    if (s.query.type === "patch") {
      ctx.strokeStyle = cssVar(this.root, "--vx-query-color", "#f33");
      ctx.lineWidth = 2;
      ctx.strokeRect(s.query.c * cw + 1, s.query.r * ch + 1, cw - 2, ch - 2);
    }
  };

  Explorer.prototype.debugState = function () {
    var s = this.state || {};
    return {
      key: this.key, family: this.m && this.m.family, pending: this.pending, rendered: this.rendered,
      error: this.root.getAttribute("data-vx-error"),
      block: s.block, head: s.head, mode: s.mode, scaleMode: s.scale, vmax: s.vmax, cmap: s.cmap, opacity: s.opacity,
      query: s.query ? Object.assign({ token: this.queryToken() }, s.query) : null,
      map: this.last, hash: location.hash,
      loadedBlocks: this.m ? this.m.blocks.map(function (_, b) { return b; }).filter(function (b) { return decoded.has(this.blockKey(b)); }, this) : []
    };
  };

  // ------------------------------------------------------------------------------------------
  // public API

  function init(scope) {
    var found = (scope || document).querySelectorAll(".vit-explorer[data-manifest]:not([data-vx-init])");
    Array.prototype.forEach.call(found, function (node) {
      var x = new Explorer(node);
      instances.push(x);
      x.start();
    });
    for (var i = instances.length - 1; i >= 0; i--) if (!document.contains(instances[i].root)) {
      if (instances[i].resizer) instances[i].resizer.disconnect();
      instances.splice(i, 1);
    }
  }

  function find(which) {
    if (which == null) return instances[0];
    if (typeof which === "number") return instances[which];
    return instances.filter(function (x) { return x.key === which || x.root === which; })[0];
  }

  var VitExplorer = window.VitExplorer = {
    version: 1,
    root: new URL("../../", SCRIPT_URL).href,
    register: function (key, base64) { blockData.set(String(key), String(base64)); },
    registerManifest: function (key, manifest) { manifests.set(String(key), manifest); },
    init: init,
    /** State of an explorer (index, key or element; default the first): see Explorer.debugState. */
    debugState: function (which) { var x = find(which); return x ? x.debugState() : null; },
    /** Rollout row of token `token` up to block b (Float64 values over the first block's tokens). */
    rolloutRow: function (which, b, token) {
      var x = find(which), need = [];
      for (var i = 0; i <= b; i++) need.push(x.loadBlock(i));
      return Promise.all(need).then(function (blocks) { return Array.prototype.slice.call(rolloutRow(blocks, b, token)); });
    },
    /** Decoded row of head h (int, "mean" or "max"), query token q, block b. */
    row: function (which, b, h, q) {
      var x = find(which);
      return x.loadBlock(b).then(function (blk) { return Array.prototype.slice.call(optionRow(blk, h, q)); });
    },
    colormap: function (name) { return COLORMAPS[name].map(function (c) { return c.slice(); }); },
    requested: function () { return requested.slice(); },
    instances: function () { return instances.slice(); },
    float16: float16
  };

  window.addEventListener("hashchange", function () {
    instances.forEach(function (x) {
      if (x.m && x.state && x.applyHash()) { x.syncControls(); x.render(false); }
    });
  });

  if (window.document$ && typeof window.document$.subscribe === "function") {
    window.document$.subscribe(function () { init(); }); // mkdocs-material, also on instant navigation
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(); });
  } else {
    init();
  }
})();
