/* vit-gallery: side-by-side models, the misclassified filter and the figure-list filters.
   Plain JavaScript, no libraries, nothing fetched: it works served and from file://. */
(function () {
  "use strict";
  var KEY = "vit-gallery.side-by-side";

  function stored() {
    try { return window.localStorage.getItem(KEY) === "1"; } catch (e) { return false; }
  }
  function store(on) {
    try { window.localStorage.setItem(KEY, on ? "1" : "0"); } catch (e) { /* private mode: not kept */ }
  }

  /* Image and chapter pages: one button shows every model side by side instead of in tabs. */
  function layoutToggle(root) {
    if (!root.querySelector(".tabbed-set") || root.querySelector(".vg-layout-toggle")) return;
    var heading = root.querySelector("h1");
    var box = document.createElement("div");
    box.className = "vg-layout-toggle";
    var button = document.createElement("button");
    button.type = "button";
    function show(on) {
      document.body.classList.toggle("vg-side-by-side", on);
      button.textContent = on ? "Show models in tabs" : "Show models side by side";
      button.setAttribute("aria-pressed", on ? "true" : "false");
    }
    button.addEventListener("click", function () {
      var on = !document.body.classList.contains("vg-side-by-side");
      store(on);
      show(on);
    });
    box.appendChild(button);
    if (heading && heading.parentNode) heading.parentNode.insertBefore(box, heading.nextSibling);
    else root.insertBefore(box, root.firstChild);
    show(stored());
  }

  /* Home page: a checkbox that keeps only the misclassified rows of the predictions table. */
  function misclassifiedFilter(root) {
    var marker = root.querySelector(".vg-filter-misclassified");
    if (!marker || marker.querySelector("input")) return;
    var table = null;
    var node = marker.closest("p") || marker;
    while (node && !table) {
      node = node.nextElementSibling;
      if (node) table = node.tagName === "TABLE" ? node : node.querySelector("table");
    }
    if (!table) return;
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var wrong = rows.filter(function (r) { return r.querySelector(".vg-wrong"); }).length;
    var label = document.createElement("label");
    var box = document.createElement("input");
    box.type = "checkbox";
    box.className = "vg-only-misclassified";
    label.appendChild(box);
    label.appendChild(document.createTextNode(" Show only misclassified (" + wrong + " of " + rows.length + ")"));
    box.addEventListener("change", function () {
      rows.forEach(function (r) { r.hidden = box.checked && !r.querySelector(".vg-wrong"); });
    });
    marker.appendChild(label);
  }

  /* Figure list: filter the rows by section and by model. */
  function figureFilter(root) {
    var box = root.querySelector(".vg-figure-filter");
    if (!box || box.querySelector("select")) return;
    var table = document.getElementById(box.getAttribute("data-target"));
    if (!table) return;
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var count = document.createElement("span");
    count.className = "vg-count";
    var selects = {};
    ["section", "model"].forEach(function (key) {
      var values = [];
      rows.forEach(function (r) {
        var v = r.getAttribute("data-" + key);
        if (values.indexOf(v) < 0) values.push(v);
      });
      var label = document.createElement("label");
      label.appendChild(document.createTextNode(key === "section" ? "Section " : "Model "));
      var select = document.createElement("select");
      select.className = "vg-filter-" + key;
      var all = document.createElement("option");
      all.value = "";
      all.textContent = "all";
      select.appendChild(all);
      values.forEach(function (v) {
        var option = document.createElement("option");
        option.value = v;
        option.textContent = v;
        select.appendChild(option);
      });
      select.addEventListener("change", apply);
      label.appendChild(select);
      box.appendChild(label);
      selects[key] = select;
    });
    box.appendChild(count);
    function apply() {
      var shown = 0;
      rows.forEach(function (r) {
        var ok = ["section", "model"].every(function (key) {
          return !selects[key].value || r.getAttribute("data-" + key) === selects[key].value;
        });
        r.hidden = !ok;
        if (ok) shown += 1;
      });
      count.textContent = shown + " of " + rows.length + " figures";
    }
    apply();
  }

  function init() {
    var root = document.querySelector("article.md-content__inner") || document.body;
    layoutToggle(root);
    misclassifiedFilter(root);
    figureFilter(root);
  }

  if (window.document$ && typeof window.document$.subscribe === "function") {
    window.document$.subscribe(init);  /* mkdocs-material: runs on every page load */
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
