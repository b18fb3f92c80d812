"""The built site in a real browser (Debian's Chromium driven by Playwright), read as a reader reads it.

On every page, served over HTTP and opened from disk (file://), the test fails on:

- literal Markdown in the text a reader sees (``## ``, a backslash escape such as ``\\-``, ``](``, ``**``),
  outside code blocks;
- two tabs with the same label in one tab set, or a tab that does not open when its label is clicked;
- a table of contents that differs from the page's headings: the Markdown source's ``##``–``######``
  headings (outside code), the article's h2–h6 elements with an id, and the links of the page's
  table of contents (the secondary sidebar) must be equal in number, and the links must point to
  those ids in order;
- a figure whose caption lacks its PNG and data links (PDFs are the export's unless ``run.pdf``), or has
  a link to a missing file; any
  internal link to a missing file or to a folder (a directory listing from disk);
- an image without alt text, or one that does not decode;
- any console error or uncaught exception; any request to another host (served) or that is not a
  local file (file://);
- source maps in the site;
- a figure in a figure list or on a page that loads before it is scrolled to (no ``loading="lazy"``);
- served: a page whose first load (every file it fetches until the network is idle: HTML, CSS, JS,
  fonts, the search index, the images in view; uncompressed) is over 1.5 MB;
- a site over 25 MB (every file, uncompressed). The weights, and the site's size and PNG bytes, are in
  ``tests/artifacts/browser-<mode>.json`` (``weight``).

On the home page it also checks that search answers (from disk too), that the misclassified filter
keeps only wrong rows, and on an image page that the lightbox shows the caption and that the
side-by-side button shows every model of a tab set at once. The figure list's filters are checked
on the figure list.

By default it reads the shared tiny gallery (conftest.built_gallery: random weights). Point it at any built site with
``VIT_GALLERY_SITE=<site dir>`` and ``VIT_GALLERY_DOCS=<output>/docs`` (the Markdown sources): that is
how the default gallery and the study's configuration are checked. Counts go to
``tests/artifacts/browser-<mode>.json``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from generator.config.loading import load_config

from .conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"

#: Markdown that should have been rendered, as it would show in the text (outside code).
LITERAL_MARKDOWN = re.compile(r"(^|\s)#{2,6} |\\[-\\`*_{}\[\]()#+.!|~<>]|\]\(|\*\*|(^|\n)\s*===!? \"|(^|\n)!!! ")
_HEADING = re.compile(r"^\s*#{2,6}\s")
_FENCE = re.compile(r"^\s*(```|~~~)")


def require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    message = ("Debian's chromium is not installed (apt-get install chromium): the browser test cannot run. "
               ".ci/run installs it; on CI this is a failure, not a skip.")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def built_site(request):
    """(site dir, docs dir): an existing build named by the environment, or the shared tiny gallery."""
    require_chromium()
    if os.environ.get("VIT_GALLERY_SITE"):
        site = Path(os.environ["VIT_GALLERY_SITE"]).resolve()
        docs = Path(os.environ.get("VIT_GALLERY_DOCS", site.parent / "build" / "docs")).resolve()
        return site, docs
    cfg = load_config(request.getfixturevalue("built_gallery").config)
    return cfg.site_dir, cfg.output / "docs"


@pytest.fixture(scope="module")
def server(built_site):
    site, _ = built_site
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args, **kwargs) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def site_pages(site: Path) -> list[str]:
    """Every HTML page of the site, relative to it (not the theme's assets)."""
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if not p.relative_to(site).as_posix().startswith(("assets/", "search/")))


def markdown_source(docs: Path, page: str) -> Path | None:
    """The Markdown file a page was built from (``images/x.html`` or ``images/x/index.html`` → ``images/x.md``)."""
    stem = page[: -len(".html")]
    candidates = [stem + ".md"]
    if stem.endswith("/index") or stem == "index":
        candidates.append(stem[: -len("/index")] + ".md" if stem != "index" else "index.md")
    return next((docs / c for c in candidates if (docs / c).is_file()), None)


def source_headings(path: Path) -> list[str]:
    """The level-2 to level-6 ATX headings of a Markdown file, outside code fences and <pre> blocks."""
    out, fenced, pre = [], False, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if "<pre" in line:
            pre = True
        if not fenced and not pre and _HEADING.match(line):
            out.append(line.strip())
        if "</pre>" in line:
            pre = False
    return out


def local_target(site: Path, url: str, page_url: str) -> Path | None:
    """The file a same-site URL points to, or None for other schemes and hosts (checked elsewhere)."""
    parsed = urlparse(url)
    base = urlparse(page_url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("http", "https") and parsed.netloc == base.netloc:
        return site / unquote(parsed.path).lstrip("/")
    return None


PAGE_PROBE = """() => {
  const article = document.querySelector('article.md-content__inner') || document.body;
  // every text node of the article, hidden tabs included, outside code
  const texts = [];
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (node.parentElement.closest('pre, code, script, style, .vg-layout-toggle')) continue;
    texts.push(node.textContent);
  }
  const sets = Array.from(article.querySelectorAll('.tabbed-set')).map(set => {
    const labels = Array.from(set.querySelectorAll(':scope > .tabbed-labels > label'));
    const blocks = Array.from(set.querySelectorAll(':scope > .tabbed-content > .tabbed-block'));
    const opens = labels.map((label, i) => {
      label.click();
      return blocks[i] ? getComputedStyle(blocks[i]).display !== 'none' : false;
    });
    if (labels.length) labels[0].click();
    return {labels: labels.map(l => l.textContent.trim()), opens};
  });
  const headings = Array.from(article.querySelectorAll('h2[id], h3[id], h4[id], h5[id], h6[id]')).map(h => h.id);
  const toc = Array.from(document.querySelectorAll('.md-sidebar--secondary nav.md-nav--secondary a.md-nav__link'))
    .map(a => decodeURIComponent(new URL(a.href).hash.slice(1)));
  const figures = Array.from(article.querySelectorAll('figure')).map(f => ({
    caption: (f.querySelector('figcaption') || {textContent: ''}).textContent.trim(),
    links: Array.from(f.querySelectorAll('figcaption a[href]')).map(a => ({label: a.textContent.trim(), href: a.href})),
  }));
  const links = Array.from(document.querySelectorAll('article a[href], nav a[href], header a[href]'))
    .map(a => a.href).filter(h => !h.startsWith('javascript:'));
  const images = Array.from(document.images).map(i => ({src: i.src, alt: (i.getAttribute('alt') || '').trim(),
                                                      ok: i.naturalWidth > 0}));
  return {texts, sets, headings, toc, figures, links, images};
}"""


def check_site(site: Path, docs: Path, base: str, mode: str) -> dict:
    """Open every page of ``site`` (at ``base``) in Chromium; return counts and the problems found."""
    from playwright.sync_api import sync_playwright

    pages = site_pages(site)
    if mode == "file":  # a server's answer to a missing URL: its links are absolute, it is never opened from disk
        pages = [p for p in pages if p != "404.html"]
    counts = {"pages": len(pages), "tab_sets": 0, "tabs": 0, "toc_entries": 0, "headings": 0, "figures": 0,
              "figure_links": 0, "links": 0, "images": 0}
    problems: dict[str, list[str]] = {k: [] for k in (
        "literal_markdown", "duplicate_tabs", "tab_does_not_open", "toc_mismatch", "figure_links", "dead_links",
        "alt_text", "broken_images", "console_errors", "foreign_requests", "search", "lightbox", "side_by_side",
        "filters", "source_maps", "eager_figures", "page_weight")}
    weights: dict[str, int] = {}
    foreign, errors = [], []
    checked_links: dict[str, bool] = {}
    loading: list[str] = []  # URLs requested while the current page loads (its first-load weight)

    def url_of(rel: str) -> str:
        return base + rel

    def request(r) -> None:
        loading.append(r.url)
        parsed = urlparse(r.url)
        if mode == "served" and parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname != "127.0.0.1":
            foreign.append(r.url)
        if mode == "file" and parsed.scheme not in ("file", "data", "blob", "about"):
            foreign.append(r.url)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.on("request", request)
            page.on("console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
            for rel in pages:
                url = url_of(rel)
                loading.clear()
                response = page.goto(url, wait_until="load")
                if mode == "served":
                    assert response is not None and response.ok, url
                    page.wait_for_load_state("networkidle")  # lazy images in view, the search index
                    weights[rel] = first_load_bytes(site, list(loading), url)
                eager = page.evaluate(EAGER_FIGURES)
                if eager:
                    problems["eager_figures"].append(f"{rel}: {len(eager)} figures load eagerly, e.g. {eager[0]}")
                page.evaluate("""async () => {
                    const imgs = Array.from(document.images);
                    imgs.forEach(i => { i.loading = 'eager'; });
                    await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
                }""")
                probe = page.evaluate(PAGE_PROBE)
                for text in probe["texts"]:
                    match = LITERAL_MARKDOWN.search(text)
                    if match:
                        problems["literal_markdown"].append(f"{rel}: {text.strip()[:120]!r}")
                for tabset in probe["sets"]:
                    counts["tab_sets"] += 1
                    counts["tabs"] += len(tabset["labels"])
                    dupes = sorted({l for l in tabset["labels"] if tabset["labels"].count(l) > 1})
                    if dupes:
                        problems["duplicate_tabs"].append(f"{rel}: {dupes}")
                    closed = [l for l, ok in zip(tabset["labels"], tabset["opens"]) if not ok]
                    if closed:
                        problems["tab_does_not_open"].append(f"{rel}: {closed}")
                counts["toc_entries"] += len(probe["toc"])
                counts["headings"] += len(probe["headings"])
                source = markdown_source(docs, rel)
                expected = len(source_headings(source)) if source else len(probe["headings"])
                if not (expected == len(probe["headings"]) == len(probe["toc"])) or probe["toc"] != probe["headings"]:
                    problems["toc_mismatch"].append(f"{rel}: {expected} headings in the Markdown, "
                                                    f"{len(probe['headings'])} on the page, {len(probe['toc'])} in the TOC")
                for figure in probe["figures"]:
                    counts["figures"] += 1
                    labels = [link["label"] for link in figure["links"]]
                    if not ("PNG" in labels and any(l.startswith(("data", "table")) for l in labels)):
                        problems["figure_links"].append(f"{rel}: {labels} in {figure['caption'][:80]!r}")
                    for link in figure["links"]:
                        counts["figure_links"] += 1
                        target = local_target(site, link["href"].split("#")[0], url)
                        if target is None or not target.is_file():
                            problems["figure_links"].append(f"{rel}: dead {link['label']} link {link['href']}")
                for href in probe["links"]:
                    target_url = href.split("#")[0]
                    if not target_url or target_url in checked_links:
                        continue
                    target = local_target(site, target_url, url)
                    if target is None:
                        continue
                    counts["links"] += 1
                    checked_links[target_url] = target.is_file()
                    if not target.is_file():
                        kind = "a folder (directory listing)" if target.is_dir() else "missing"
                        problems["dead_links"].append(f"{rel}: {href} is {kind}")
                for image in probe["images"]:
                    counts["images"] += 1
                    if not image["alt"]:
                        problems["alt_text"].append(f"{rel}: {image['src']}")
                    if not image["ok"]:
                        problems["broken_images"].append(f"{rel}: {image['src']}")
                if rel == "index.html":
                    page.screenshot(path=str(ARTIFACTS / f"home-{mode}.png"), full_page=False)
            interactions(page, pages, url_of, problems, mode, counts)
        finally:
            browser.close()
    problems["console_errors"] = errors
    problems["foreign_requests"] = sorted(set(foreign))
    maps = [p.relative_to(site).as_posix() for p in site.rglob("*.map")]
    maps += [p.relative_to(site).as_posix() for p in list(site.rglob("*.js")) + list(site.rglob("*.css"))
             if b"sourceMappingURL" in p.read_bytes()[-300:]]
    problems["source_maps"] = maps
    weight = page_weight_summary(site, weights)
    if weight["heaviest_first_load_bytes"] > MAX_FIRST_LOAD_BYTES:
        problems["page_weight"].append(f"{weight['heaviest_page']}: first load {weight['heaviest_first_load_bytes']} "
                                       f"bytes > {MAX_FIRST_LOAD_BYTES}")
    if weight["site_bytes"] > MAX_SITE_BYTES:
        problems["page_weight"].append(f"the site: {weight['site_bytes']} bytes > {MAX_SITE_BYTES}")
    return {"mode": mode, "site": str(site), "counts": counts, "weight": weight,
            "failed_checks": sorted(k for k, v in problems.items() if v), "problems": problems}


#: The most a page may fetch on its first load (HTML, CSS, JS, fonts, the search index, images in view).
MAX_FIRST_LOAD_BYTES = 1_500_000
#: The most the whole site may weigh (issue #31's goal for the default gallery).
MAX_SITE_BYTES = 25_000_000

#: Figures that would load before they are scrolled to (figure lists and pages load them lazily).
EAGER_FIGURES = """() => Array.from(document.querySelectorAll('article figure.vg-figure img, #vg-figure-table img'))
  .filter(i => i.getAttribute('loading') !== 'lazy').map(i => i.src)"""


def first_load_bytes(site: Path, urls: list[str], page_url: str) -> int:
    """Bytes of the site's files behind ``urls`` (each counted once): what a first visit fetches, uncompressed."""
    files = {local_target(site, u.split("#")[0].split("?")[0], page_url) for u in urls}
    return sum(f.stat().st_size for f in files if f is not None and f.is_file())


def page_weight_summary(site: Path, weights: dict[str, int]) -> dict:
    """The site's size and the first-load weight of each page (served mode only; empty from disk)."""
    heaviest = max(weights, key=weights.get, default="")
    return {"site_bytes": sum(p.stat().st_size for p in site.rglob("*") if p.is_file()),
            "png_bytes": sum(p.stat().st_size for p in site.rglob("*.png") if p.is_file()),
            "heaviest_page": heaviest, "heaviest_first_load_bytes": weights.get(heaviest, 0),
            "first_load_bytes": dict(sorted(weights.items()))}


def interactions(page, pages: list[str], url_of, problems: dict, mode: str, counts: dict) -> None:
    """Search, the lightbox caption, side by side, and the filters."""
    page.goto(url_of("index.html"), wait_until="load")
    try:
        page.locator("label.md-search__icon, .md-search__input").first.click()
        page.wait_for_timeout(1500)  # the search worker loads its index
        page.locator("input.md-search__input").press_sequentially("rollout", delay=30)
        page.wait_for_selector(".md-search-result__item", timeout=15000)
        counts["search_results"] = page.locator(".md-search-result__item").count()
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        problems["search"].append(f"no search results for 'rollout' ({mode}): {type(exc).__name__}")
    page.goto(url_of("index.html"), wait_until="load")
    box = page.locator("input.vg-only-misclassified")
    if box.count():
        box.check()
        shown = page.evaluate("""() => Array.from(document.querySelectorAll('table tbody tr'))
            .filter(r => r.querySelector('.vg-right, .vg-wrong') && !r.hidden)
            .map(r => !!r.querySelector('.vg-wrong'))""")
        if not all(shown):
            problems["filters"].append("misclassified filter shows a correct row")
    image_pages = [p for p in pages if p.startswith("images/")]
    if image_pages:
        page.goto(url_of(image_pages[0]), wait_until="load")
        link = page.locator("article figure a.glightbox").first
        if link.count():
            caption = page.evaluate("""() => {
                const a = document.querySelector('article figure a.glightbox');
                const f = a.closest('figure');
                return f && f.querySelector('figcaption') ? f.querySelector('figcaption').textContent.trim() : '';
            }""")
            link.scroll_into_view_if_needed()
            link.click()
            try:
                page.wait_for_selector(".gslide.current .gslide-description", state="visible", timeout=5000)
                shown = page.inner_text(".glightbox-container .gslide.current .gslide-description")
                if caption[:40] not in shown:
                    problems["lightbox"].append(f"{image_pages[0]}: lightbox shows {shown[:60]!r}, not the caption")
            except Exception as exc:  # noqa: BLE001
                problems["lightbox"].append(f"{image_pages[0]}: no caption in the lightbox ({type(exc).__name__})")
            page.keyboard.press("Escape")
        button = page.locator(".vg-layout-toggle button")
        if not button.count():
            problems["side_by_side"].append(f"{image_pages[0]}: no side-by-side button")
        else:
            button.click()
            hidden = page.evaluate("""() => Array.from(document.querySelectorAll('.tabbed-set'))
                .flatMap(s => Array.from(s.querySelectorAll(':scope > .tabbed-content > .tabbed-block')))
                .filter(b => getComputedStyle(b).display === 'none').length""")
            if hidden:
                problems["side_by_side"].append(f"{image_pages[0]}: {hidden} tab blocks still hidden side by side")
            button.click()
            page.evaluate("() => localStorage.clear()")
    if "figure-list.html" in pages:
        page.goto(url_of("figure-list.html"), wait_until="load")
        models = page.evaluate("() => Array.from(document.querySelectorAll('select.vg-filter-model option')).map(o => o.value)")
        if len(models) < 2:
            problems["filters"].append("figure list: no model filter")
        else:
            page.select_option("select.vg-filter-model", models[1])
            wrong = page.evaluate("""(m) => Array.from(document.querySelectorAll('#vg-figure-table tbody tr'))
                .filter(r => !r.hidden && r.getAttribute('data-model') !== m).length""", models[1])
            if wrong:
                problems["filters"].append(f"figure list: {wrong} rows of other models shown")


@pytest.mark.parametrize("mode", ["served", "file"])
def test_the_site_reads_right_in_chromium(built_site, server, mode):
    site, docs = built_site
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = server if mode == "served" else site.as_uri() + "/"
    report = check_site(site, docs, base, mode)
    (ARTIFACTS / f"browser-{mode}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(json.dumps({"mode": mode, "counts": report["counts"], "failed_checks": report["failed_checks"],
                      "weight": {k: v for k, v in report["weight"].items() if k != "first_load_bytes"}}))
    assert report["counts"]["pages"] >= 8
    if mode == "served":  # every page was weighed, and its HTML at least is in its weight
        weights = report["weight"]["first_load_bytes"]
        assert set(weights) == set(site_pages(site)) and all(w > 0 for w in weights.values()), weights
        assert all(weights[p] >= (site / p).stat().st_size for p in weights)
    assert not report["failed_checks"], {k: report["problems"][k][:5] for k in report["failed_checks"]}
