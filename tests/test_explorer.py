"""The attention explorer: export format and error bound (Python), size budgets, and the page in a
real browser (Debian's Chromium driven by Playwright), served over HTTP and from file://."""

from __future__ import annotations

import base64
import functools
import http.server
import html
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import timm
import torch

from generator.attention.capture import vit_attention
from generator.attention.explorer import (ExplorerData, decode_block, dequantise_rows, encode_block, explorer_rollout,
                                          float16_ceil, quantisation_error_bound, quantise_rows, swin_explorer_data,
                                          vit_explorer_data)
from generator.site.explorer import (ASSET_FILES, ASSETS_DIR, ASSET_PREFIX, copy_assets_to, write_explorer,
                                     write_explorer_assets)
from generator.attention.rollout import attention_rollout
from generator.attention.windows import full_attention_from_windows, swin_rollout, window_attention

from .conftest import ROOT
from .test_browser import CHROMIUM, require_chromium

VIT = "vit_fmnist_patch4_28"
SWIN = "swin_fmnist_patch2_28"
MODEL_SLUG = {VIT: "vit-fmnist", SWIN: "swin-fmnist"}
IMAGE_SLUG = "synthetic-0"
BROWSER_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"]
_REGISTER = re.compile(r'^VitExplorer\.register\("([^"]+)", "([A-Za-z0-9+/=]*)"\);\n$')


# ------------------------------------------------------------------------------------------------
# helpers


# The page harness: what the site's template and mkdocs config do, for standalone test pages.


def mkdocs_extra() -> dict[str, list[str]]:
    """The mkdocs config entries that load the explorer on every page (paths relative to docs_dir)."""
    return {"extra_javascript": [f"{ASSET_PREFIX}/explorer.js"], "extra_css": [f"{ASSET_PREFIX}/explorer.css"]}


def explorer_placeholder(page: ExplorerPage, label: str = "") -> str:
    """The raw-HTML placeholder explorer.js turns into the explorer (a block of its own in Markdown:
    surround it with blank lines). ``label`` (e.g. the model's display name) is escaped."""
    label = label or page.key
    return (f'<div class="vit-explorer" data-manifest="{html.escape(page.manifest, quote=True)}" '
            f'data-key="{html.escape(page.key, quote=True)}" aria-label="Attention explorer: '
            f'{html.escape(label, quote=True)}"><noscript>The attention explorer needs JavaScript.'
            f"</noscript></div>")


def seeded_view(seed: int = 0, size: int = 28) -> np.ndarray:
    """A seeded synthetic (size, size, 3) uint8 image: a bright square on a noisy background."""
    rng = np.random.default_rng(seed)
    view = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    y, x = rng.integers(0, size // 2, size=2)
    view[y : y + size // 2, x : x + size // 2] = 230
    return view


def model_input(model: torch.nn.Module, view: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) input normalised with the model's own data config."""
    cfg = timm.data.resolve_model_data_config(model)
    mean = torch.tensor(cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(cfg["std"]).view(3, 1, 1)
    return ((torch.from_numpy(view).permute(2, 0, 1).float() / 255.0 - mean) / std)[None]


def read_block(folder: Path, manifest: dict, b: int) -> np.ndarray:
    """Decode block ``b`` from the written .js file, as the page gets it."""
    text = (folder / manifest["blocks"][b]["file"]).read_text(encoding="ascii")
    match = _REGISTER.match(text)
    assert match, text[:80]
    assert match.group(1) == f"{manifest['key']}/b{b}"
    info = manifest["blocks"][b]
    return decode_block(base64.b64decode(match.group(2)), info["heads"], info["tokens"], info["top_k"])


def stored_maxima(attn: np.ndarray) -> np.ndarray:
    """Each row's maximum rounded up to the next float16, by a plain loop (the scheme's stated rule)."""
    rows = np.asarray(attn, dtype=np.float64)
    flat = rows.reshape(-1, rows.shape[-1])
    out = np.empty(len(flat))
    for i, row in enumerate(flat):
        m = float(row.max())
        f = np.float16(m)
        if float(f) < m:
            f = np.nextafter(f, np.float16(np.inf))
        out[i] = float(f)
    return out.reshape(rows.shape[:-1])


def test_stored_maxima_follow_the_rule_by_hand():
    rows = np.array([[0.0, 0.1, 0.3], [1e-4, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # 0.3 lies between the float16 neighbours 0.2998 and 0.3000: the stored maximum is never below it
    assert np.array_equal(quantise_rows(rows)[1].astype(np.float64), stored_maxima(rows))
    assert np.all(stored_maxima(rows) >= rows.max(axis=-1)) and stored_maxima(rows)[2] == 0.0


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: timm.create_model(name, pretrained=True).eval() for name in (VIT, SWIN)}


@pytest.fixture(scope="module")
def captured(models):
    """name → (ExplorerData, x, view) for one seeded image."""
    view = seeded_view(0)
    out = {}
    for name, model in models.items():
        x = model_input(model, view)
        data = vit_explorer_data(model, x) if name == VIT else swin_explorer_data(model, x)
        out[name] = (data, x, view)
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory, captured):
    """A static site without mkdocs: assets, both explorers for one image, and pages in a sub-folder."""
    root = tmp_path_factory.mktemp("explorer-site")
    copy_assets_to(root)
    pages = {}
    for name, (data, _x, view) in captured.items():
        pages[name] = write_explorer(root, IMAGE_SLUG, MODEL_SLUG[name], data, view)
    # a sparse (top-k) export of the ViT as a third explorer
    pages["topk"] = write_explorer(root, IMAGE_SLUG, "vit-topk", captured[VIT][0], captured[VIT][2], top_k=10)
    head = ('<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            '<link rel="stylesheet" href="../assets/vit-explorer/explorer.css"><title>explorer</title></head><body>')
    tail = '<script src="../assets/vit-explorer/explorer.js"></script></body></html>'
    (root / "pages").mkdir()
    for name, page in pages.items():
        (root / "pages" / f"{MODEL_SLUG.get(name, 'vit-topk')}.html").write_text(
            head + explorer_placeholder(page, name) + tail, encoding="utf-8")
    (root / "pages" / "both.html").write_text(
        head + "".join(explorer_placeholder(pages[n], n) for n in (VIT, SWIN)) + tail, encoding="utf-8")
    manifests = {name: json.loads((root / page.folder / "manifest.json").read_text()) for name, page in pages.items()}
    return root, pages, manifests


# ------------------------------------------------------------------------------------------------
# Python side: quantisation


def test_float16_ceil_is_the_smallest_float16_not_below():
    x = np.array([0.0, 1e-8, 6.1e-5, 1 / 197, 0.3333333, 0.5, 1.0, 65504.0])
    h = float16_ceil(x)
    assert h.dtype == np.float16
    assert np.all(h.astype(np.float64) >= x)
    below = np.nextafter(h, np.float16(-np.inf)).astype(np.float64)
    assert np.all((below < x) | (h == 0))
    normal = x >= 2.0**-14
    assert np.all(h[normal].astype(np.float64) <= x[normal] * (1 + 2.0**-10))
    with pytest.raises(ValueError):
        float16_ceil(np.array([-1.0]))


def test_quantisation_error_bound_holds_and_is_nearly_tight():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4, 300, 197))
    rows = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    rows[0, 0] = 0.0  # an all-zero row decodes to zeros
    rows[1, 1, :5] = [1e-9, 1e-7, 1e-5, 0.0, 1.0]
    codes, m16 = quantise_rows(rows)
    decoded = dequantise_rows(codes, m16)
    err = np.abs(decoded - rows)
    assert np.all(m16.astype(np.float64) >= rows.max(-1))
    assert np.all(err <= quantisation_error_bound(m16, rows) + 1e-15)
    assert np.all(err <= quantisation_error_bound(m16)[..., None] + 1e-15)
    assert np.all(decoded[0, 0] == 0)
    # tight: the worst error comes within 5 % of m16/255 on these rows
    ratio = (err / np.maximum(quantisation_error_bound(m16)[..., None], 1e-30)).max()
    assert 0.95 < ratio <= 1.0
    # small values are kept far more precisely than the row bound
    small = rows < m16[..., None].astype(np.float64) / 1000
    assert err[small].max() < quantisation_error_bound(m16).max() / 10


@pytest.mark.parametrize("top_k", [None, 7])
def test_encode_decode_block_layout(top_k):
    rng = np.random.default_rng(1)
    attn = rng.dirichlet(np.ones(20), size=(3, 20))
    data = encode_block(attn, top_k)
    heads, n = 3, 20
    assert len(data) == 2 * heads * n + (heads * n * n if top_k is None else 3 * heads * n * top_k)
    maxima = np.frombuffer(data[: 2 * heads * n], dtype="<f2").reshape(heads, n)
    assert np.array_equal(maxima, float16_ceil(attn.max(-1)))
    dense = dequantise_rows(*quantise_rows(attn))
    decoded = decode_block(data, heads, n, top_k)
    if top_k is None:
        codes = np.frombuffer(data[2 * heads * n :], dtype=np.uint8).reshape(heads, n, n)
        assert np.array_equal(codes, quantise_rows(attn)[0])
        assert np.array_equal(decoded, dense)
    else:
        kept = decoded > 0
        assert np.all(kept.sum(-1) == top_k)
        assert np.array_equal(decoded[kept], dense[kept])
        # the kept keys are each row's largest
        kth = np.sort(attn, -1)[..., -top_k][..., None]
        assert np.all(attn[kept.nonzero()] >= kth[kept.nonzero()[0], kept.nonzero()[1], 0])


# ------------------------------------------------------------------------------------------------
# Python side: exports against the capture functions


def test_vit_export_decodes_to_captured_attention(site, captured, models):
    root, pages, manifests = site
    data, x, _ = captured[VIT]
    with torch.inference_mode():
        _, attn = vit_attention(models[VIT], x)
    m = manifests[VIT]
    assert m["family"] == "vit" and m["grid"] == [7, 7] and m["prefix_tokens"] == ["CLS"]
    assert m["image_size"] == [28, 28] and m["patch_size"] == [4, 4] and len(m["blocks"]) == 6
    assert m["quantisation"]["scheme"] == "sqrt-uint8"
    worst = 0.0
    for b in range(6):
        exact = attn[b, 0].double().numpy()
        assert m["blocks"][b]["heads"] == 4 and m["blocks"][b]["tokens"] == 50
        np.testing.assert_array_equal(data.blocks[b].attn, attn[b, 0].numpy())
        decoded = read_block(root / pages[VIT].folder, m, b)
        err = np.abs(decoded - exact)
        assert np.all(err <= quantisation_error_bound(stored_maxima(exact), exact) + 1e-12)
        worst = max(worst, err.max())
    print(f"ViT max abs error {worst:.3g}")
    assert worst < 1 / 255


def test_swin_export_equals_full_attention_from_windows(site, captured, models):
    root, pages, manifests = site
    data, x, _ = captured[SWIN]
    with torch.inference_mode():
        _, attention, geometry = window_attention(models[SWIN], x)
    keys = sorted(attention)
    m = manifests[SWIN]
    assert [b["grid"] for b in m["blocks"]] == [[14, 14], [14, 14], [7, 7], [7, 7]]
    assert m["prefix_tokens"] == [] and m["patch_size"] == [2, 2]
    assert any(b["shift"] != [0, 0] for b in m["blocks"])  # the shifted block is there
    worst = 0.0
    for b, key in enumerate(keys):
        g = geometry[key]
        full = full_attention_from_windows(attention[key], g)[0].numpy()
        np.testing.assert_array_equal(data.blocks[b].attn, full)
        info = m["blocks"][b]
        assert (info["stage"], info["block_in_stage"]) == key
        assert info["grid"] == list(g.grid) and info["window"] == list(g.window) and info["shift"] == list(g.shift)
        decoded = read_block(root / pages[SWIN].folder, m, b)
        exact = full.astype(np.float64)
        err = np.abs(decoded - exact)
        assert np.all(err <= quantisation_error_bound(stored_maxima(exact), exact) + 1e-12)
        assert np.all(decoded[exact == 0] == 0)  # outside the window stays exactly 0
        worst = max(worst, err.max())
    print(f"Swin max abs error {worst:.3g}")


def test_swin_top_k_of_window_area_is_lossless(captured):
    data, _, _ = captured[SWIN]
    for blk in data.blocks:
        k = blk.window[0] * blk.window[1]
        heads, n, _ = blk.attn.shape
        dense = decode_block(encode_block(blk.attn), heads, n)
        sparse = decode_block(encode_block(blk.attn, k), heads, n, k)
        np.testing.assert_array_equal(sparse, dense)


def test_rollout_definition_matches_the_rollout_module(captured, models):
    data, x, _ = captured[VIT]
    attn = torch.stack([torch.from_numpy(b.attn).double() for b in data.blocks])[:, None]
    for upto in (0, 3, 5):
        ours = explorer_rollout([b.attn for b in data.blocks], [b.grid for b in data.blocks], upto)
        ref = attention_rollout(attn[: upto + 1], head_fusion="mean", discard_ratio=0.0, start_block=0,
                                normalize=True, keep_index=None)[0].numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ours.sum(-1), 1.0, rtol=1e-12)
    # Swin: across patch merging, the mean of the last block's rows is swin_rollout's relevance
    sdata, sx, _ = captured[SWIN]
    with torch.inference_mode():
        _, attention, geometry = window_attention(models[SWIN], sx)
    relevance, _ = swin_rollout(attention, geometry, head_fusion="mean", discard_ratio=0.0, normalize=True)
    last = len(sdata.blocks) - 1
    ours = explorer_rollout([b.attn.astype(np.float64) for b in sdata.blocks], [b.grid for b in sdata.blocks], last)
    assert ours.shape == (49, 196)
    np.testing.assert_allclose(ours.mean(0).reshape(14, 14), relevance[0].numpy(), rtol=1e-5, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Python side: files, page pieces, budgets


def test_write_explorer_files_placeholder_template_and_assets(tmp_path, captured):
    data, _, view = captured[VIT]
    page = write_explorer(tmp_path, IMAGE_SLUG, "vit-fmnist", data, view)
    folder = tmp_path / "explorer" / "vit-fmnist" / IMAGE_SLUG
    assert page.manifest == f"explorer/vit-fmnist/{IMAGE_SLUG}/manifest.js"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["image.png", "manifest.js", "manifest.json"] + [f"block-{b:02d}.js" for b in range(6)])
    assert page.total_bytes == sum(p.stat().st_size for p in folder.iterdir())
    mtime = (folder / "block-00.js").stat().st_mtime_ns
    write_explorer(tmp_path, IMAGE_SLUG, "vit-fmnist", data, view)  # unchanged bytes are not rewritten
    assert (folder / "block-00.js").stat().st_mtime_ns == mtime
    # fewer blocks: the stale block files go, nothing else does
    (folder / "notes.txt").write_text("mine")
    short = ExplorerData(data.family, data.blocks[:2], data.prefix_names, data.image_size, data.patch_size)
    write_explorer(tmp_path, IMAGE_SLUG, "vit-fmnist", short, view)
    assert sorted(p.name for p in folder.glob("block-*")) == ["block-00.js", "block-01.js"]
    assert (folder / "notes.txt").exists()
    with pytest.raises(ValueError):
        write_explorer(tmp_path, "../evil", "vit-fmnist", data, view)

    from generator.site.pages import make_environment

    text = make_environment().get_template("sections/explorer.md.j2").render(
        extras={"explorers": [{"manifest": page.manifest, "key": page.key, "label": "ViT <x>"}]})
    assert re.search(r'=== "ViT &(lt|#60);x&(gt|#62);"', text) and "<x>" not in text
    assert f'<div class="vit-explorer" data-manifest="{page.manifest}" data-key="{page.key}"' in text

    written = write_explorer_assets(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [f"assets/vit-explorer/{n}" for n in ASSET_FILES]
    # every page loads what was written: the theme lists each asset (scripts as scripts, styles as styles)
    import yaml

    from generator.site.resources import theme_config

    theme = yaml.load(theme_config().read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    for path in written:
        listed = theme["extra_javascript"] if path.suffix == ".js" else theme["extra_css"]
        assert path.relative_to(tmp_path).as_posix() in listed, path


def test_budget_vit_b16_first_load_under_1_mb(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    rng = np.random.default_rng(0)
    view = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)  # noise: the worst case for the PNG
    data = vit_explorer_data(model, model_input(model, view))
    assert data.blocks[0].attn.shape == (12, 197, 197)
    page = write_explorer(tmp_path, "noise", "vit-b16", data, view)
    assets = sum((ASSETS_DIR / n).stat().st_size for n in ASSET_FILES)
    first = page.first_load_bytes + assets
    block = page.files["block-00.js"]
    print(f"ViT-B/16 224 px: first load {first} bytes (block {block}, image {page.files['image.png']}, "
          f"manifest {page.files['manifest.js']}, assets {assets}); all 12 blocks {page.total_bytes} bytes")
    assert block < 12 * 197 * 197 * 4 / 3 * 1.02 + 1000
    assert first <= 1_000_000


def test_budget_default_gallery_under_10_mb(tmp_path, models):
    total = 0
    for i in range(13):
        view = seeded_view(100 + i)
        for name, model in models.items():
            x = model_input(model, view)
            data = vit_explorer_data(model, x) if name == VIT else swin_explorer_data(model, x)
            total += write_explorer(tmp_path, f"image-{i}", MODEL_SLUG[name], data, view).total_bytes
    total += sum((ASSETS_DIR / n).stat().st_size for n in ASSET_FILES)
    print(f"13 images × 2 embedded models: {total} bytes")
    assert total == sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) + \
        sum((ASSETS_DIR / n).stat().st_size for n in ASSET_FILES)
    assert total <= 10_000_000


# ------------------------------------------------------------------------------------------------
# browser side


@pytest.fixture(scope="module")
def server(site):
    root = site[0]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page with every request, console error and page error recorded."""

    def __init__(self, browser, base: str):
        self.page = browser.new_page(viewport={"width": 1100, "height": 900})
        self.base = base
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, rel: str, which: int = 0):
        self.page.goto(self.base + rel, wait_until="load")
        self.wait(which)
        return self

    def wait(self, which: int = 0, rendered_after: int = 0):
        self.page.wait_for_function(
            f"() => {{ const s = window.VitExplorer && VitExplorer.debugState({which});"
            f" return s && (s.error || (!s.pending && s.rendered > {rendered_after})); }}", timeout=20000)
        state = self.state(which)
        assert not state["error"], state["error"]
        return state

    def state(self, which: int = 0):
        return self.page.evaluate(f"VitExplorer.debugState({which})")

    def act(self, fn, which: int = 0):
        """Run ``fn`` (an interaction) and wait for the explorer to render again."""
        before = self.state(which)["rendered"]
        fn()
        return self.wait(which, before)

    def pixels(self, selector: str) -> np.ndarray:
        data = self.page.evaluate("""(sel) => { const c = document.querySelector(sel);
            return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; }""",
                                  selector)
        w, h, flat = data
        return np.array(flat, dtype=np.uint8).reshape(h, w, 4)

    def click_patch(self, r: int, c: int, grid, which: int = 0):
        box = self.page.locator(".vx-overlay").nth(which).bounding_box()
        x = box["x"] + (c + 0.5) * box["width"] / grid[1]
        y = box["y"] + (r + 0.5) * box["height"] / grid[0]
        return self.act(lambda: self.page.mouse.click(x, y), which)

    def check_clean(self):
        foreign = [u for u in self.requests
                   if urlparse(u).scheme not in ("file", "data") and urlparse(u).hostname != "127.0.0.1"]
        assert not foreign, foreign
        assert not self.errors, self.errors


def invert_colormap(watched: Watched, pixels: np.ndarray, cmap: str) -> np.ndarray:
    lut = np.array(watched.page.evaluate(f"VitExplorer.colormap('{cmap}')"), dtype=np.int64)
    codes = {tuple(c): i for i, c in enumerate(lut)}
    assert len(codes) == 256, "colour map is not invertible"
    assert np.all(pixels[..., 3] == 255)
    return np.array([[codes[tuple(int(v) for v in px[:3])] for px in row] for row in pixels])


@pytest.fixture(params=["http", "file"])
def base(request, site, server):
    return server if request.param == "http" else site[0].as_uri() + "/"


def expected_map(decoded: np.ndarray, head, token: int, prefix: int) -> np.ndarray:
    """The page's values for a head option: decoded rows, patch keys only."""
    if head == "mean":
        row = decoded[:, token].mean(0)
    elif head == "max":
        row = decoded[:, token].max(0)
    else:
        row = decoded[head, token]
    return row[prefix:]


@pytest.mark.parametrize("name", [VIT, SWIN])
def test_clicked_patch_overlay_matches_python(browser, base, site, captured, name):
    root, pages, manifests = site
    m = manifests[name]
    data = captured[name][0]
    w = Watched(browser, base).open(f"pages/{MODEL_SLUG[name]}.html")
    first = w.state()
    # only the manifest and the shown block were loaded (no prefetch before any interaction)
    loaded = sorted(Path(urlparse(u).path).name for u in w.page.evaluate("VitExplorer.requested()"))
    assert loaded == sorted(["manifest.js", m["blocks"][first["block"]]["file"]])
    prefix = len(m["prefix_tokens"])
    cases = [(1, 1, (3, 4), "viridis"), (len(m["blocks"]) - 1, "mean", (0, 6), "gray"), (0, "max", (6, 1), "viridis")]
    if name == SWIN:
        cases.append((1, 0, (2, 12), "gray"))  # the shifted block, a query in a window that wraps round
    for block, head, (r, c), cmap in cases:
        w.act(lambda: w.page.locator(".vx-block").fill(str(block)))
        w.act(lambda: w.page.locator(".vx-head").select_option(str(head)))
        if w.state()["cmap"] != cmap:
            w.act(lambda: w.page.locator(".vx-cmap").select_option(cmap))
        grid = m["blocks"][block]["grid"]
        state = w.click_patch(r, c, grid)
        token = prefix + r * grid[1] + c
        assert state["query"] == {"type": "patch", "r": r, "c": c, "token": token}
        assert state["block"] == block and state["head"] == head
        intens = invert_colormap(w, w.pixels(".vx-overlay"), cmap)
        assert intens.shape == tuple(grid)
        assert intens.ravel().tolist() == state["map"]["intensities"]
        decoded = read_block(root / pages[name].folder, m, block)
        values = expected_map(decoded, head, token, prefix)
        np.testing.assert_allclose(state["map"]["values"], values, rtol=1e-12, atol=1e-15)
        scale = values.max()
        assert abs(state["map"]["scale"] - scale) <= 1e-12
        assert np.abs(intens.ravel() - np.round(255 * values / scale)).max() <= 1
        # against the captured (unquantised) attention: within the quantisation bound + colour rounding
        exact = expected_map(data.blocks[block].attn.astype(np.float64), head, token, prefix)
        bound = quantisation_error_bound(stored_maxima(data.blocks[block].attn[:, token])).max()
        assert np.all(np.abs(intens.ravel() / 255 * scale - exact) <= bound + scale / 510 + 1e-12)
        # the head grid: one map per head, then mean and max, each scaled to its own max
        heads = state["map"]["heads"]
        assert [h["head"] for h in heads] == list(range(m["blocks"][block]["heads"])) + ["mean", "max"]
        for h in heads:
            v = expected_map(decoded, h["head"], token, prefix)
            assert np.abs(np.array(h["intensities"]) - np.round(255 * v / v.max())).max() <= 1
    # the CLS token as the query (ViT)
    if name == VIT:
        state = w.act(lambda: w.page.locator(".vx-query").select_option("prefix:0"))
        assert state["query"]["token"] == 0
        decoded = read_block(root / pages[name].folder, m, state["block"])
        values = expected_map(decoded, state["head"], 0, prefix)
        np.testing.assert_allclose(state["map"]["values"], values, rtol=1e-12)
    w.check_clean()
    w.page.close()


@pytest.mark.parametrize("name", [VIT, SWIN])
def test_rollout_in_js_matches_python(browser, base, site, name):
    root, pages, manifests = site
    m = manifests[name]
    folder = root / pages[name].folder
    decoded = [read_block(folder, m, b) for b in range(len(m["blocks"]))]
    grids = [tuple(b["grid"]) for b in m["blocks"]]
    w = Watched(browser, base).open(f"pages/{MODEL_SLUG[name]}.html")
    last = len(m["blocks"]) - 1
    for upto in range(len(m["blocks"])):
        ref = explorer_rollout(decoded, grids, upto)
        for token in (0, ref.shape[0] // 2, ref.shape[0] - 1):
            js = w.page.evaluate(f"VitExplorer.rolloutRow(0, {upto}, {token})")
            np.testing.assert_allclose(js, ref[token], rtol=1e-10, atol=1e-14)
    # the page in rollout mode draws the query's row over the first block's grid
    w.act(lambda: w.page.locator(".vx-mode").select_option("rollout"))
    grid = m["blocks"][last]["grid"]
    state = w.click_patch(3, 2, grid)
    prefix = len(m["prefix_tokens"])
    token = prefix + 3 * grid[1] + 2
    ref = explorer_rollout(decoded, grids, last)[token][prefix:]
    assert state["mode"] == "rollout" and state["map"]["grid"] == list(grids[0])
    np.testing.assert_allclose(state["map"]["values"], ref, rtol=1e-10)
    intens = invert_colormap(w, w.pixels(".vx-overlay"), state["cmap"])
    assert np.abs(intens.ravel() - np.round(255 * ref / ref.max())).max() <= 1
    w.check_clean()
    w.page.close()


def test_url_state_is_written_and_restored(browser, base, site):
    _, pages, manifests = site
    key = pages[SWIN].key
    w = Watched(browser, base).open("pages/swin-fmnist.html")
    w.act(lambda: w.page.locator(".vx-block").fill("1"))
    w.act(lambda: w.page.locator(".vx-head").select_option("0"))
    w.act(lambda: w.page.locator(".vx-scale").select_option("fixed"))
    w.click_patch(5, 9, [14, 14])
    url = w.page.url
    assert f"{key}.block=1" in url and f"{key}.head=0" in url and f"{key}.query=5,9" in url
    assert f"{key}.scale=fixed" in url
    fresh = Watched(browser, base)
    fresh.page.goto(url, wait_until="load")
    state = fresh.wait()
    assert (state["block"], state["head"], state["scaleMode"], state["query"]["r"], state["query"]["c"]) == (1, 0, "fixed", 5, 9)
    assert fresh.page.locator(".vx-block").input_value() == "1"
    assert fresh.page.locator(".vx-head").input_value() == "0"
    # a hand-written link: rollout, gray, CLS query on the ViT; the other explorer on the page keeps its defaults
    vkey = pages[VIT].key
    link = (f"pages/both.html#{vkey}.block=4&{vkey}.head=max&{vkey}.query=cls&{vkey}.mode=rollout"
            f"&{vkey}.cmap=gray&{vkey}.opacity=0.25")
    both = Watched(browser, base).open(link, 0)
    s0, s1 = both.wait(0), both.wait(1)
    assert (s0["key"], s0["block"], s0["head"], s0["mode"], s0["cmap"], s0["opacity"]) == (vkey, 4, "max", "rollout", "gray", 0.25)
    assert s0["query"]["type"] == "prefix" and s0["query"]["token"] == 0
    assert s1["key"] == key and s1["block"] == len(manifests[SWIN]["blocks"]) - 1 and s1["mode"] == "raw"
    # changing the second explorer keeps the first one's entries in the hash
    both.click_patch(1, 1, manifests[SWIN]["blocks"][-1]["grid"], which=1)
    assert f"{vkey}.mode=rollout" in both.page.url and f"{key}.query=1,1" in both.page.url
    for x in (w, fresh, both):
        x.check_clean()
        x.page.close()


def test_arrow_keys_move_the_query_and_canvas_is_accessible(browser, base):
    w = Watched(browser, base).open("pages/vit-fmnist.html")
    overlay = w.page.locator(".vx-overlay")
    assert overlay.get_attribute("tabindex") == "0"
    assert "CLS token" in overlay.get_attribute("aria-label")
    overlay.focus()
    state = w.act(lambda: w.page.keyboard.press("ArrowRight"))  # from CLS: to the centre patch
    assert (state["query"]["r"], state["query"]["c"]) == (3, 3)
    state = w.act(lambda: w.page.keyboard.press("ArrowRight"))
    assert (state["query"]["r"], state["query"]["c"]) == (3, 4)
    state = w.act(lambda: w.page.keyboard.press("ArrowUp"))
    assert (state["query"]["r"], state["query"]["c"]) == (2, 4)
    for _ in range(3):
        w.page.keyboard.press("ArrowUp")
    state = w.wait()
    assert (state["query"]["r"], state["query"]["c"]) == (0, 4)  # clamped at the edge
    assert "row 0, column 4" in overlay.get_attribute("aria-label")
    assert "query=0,4" in w.page.url
    # the small head maps are buttons with names; clicking one selects that head
    buttons = w.page.locator(".vx-head-map")
    assert buttons.count() == 6
    state = w.act(lambda: buttons.nth(2).click())
    assert state["head"] == 2 and buttons.nth(2).get_attribute("aria-pressed") == "true"
    assert w.page.evaluate("document.activeElement.getAttribute('data-head')") == "2"  # focus survives the redraw
    before = state["query"]
    state = w.act(lambda: w.page.keyboard.press("ArrowRight") or w.page.keyboard.press("Enter"))
    assert state["head"] == 2 and state["query"] == before  # arrow keys move the query only on the map
    # block changes prefetch the neighbours
    w.act(lambda: w.page.locator(".vx-block").fill("2"))
    w.page.wait_for_function("VitExplorer.debugState(0).loadedBlocks.length >= 4")
    assert {1, 2, 3, 5} <= set(w.state()["loadedBlocks"])
    w.check_clean()
    w.page.close()


# ------------------------------------------------------------------------------------------------
# inside a real mkdocs-material build (the project's theme), with instant navigation


@pytest.fixture(scope="module")
def mkdocs_site(tmp_path_factory, captured):
    require_chromium()
    from generator.site.resources import theme_config
    from generator.site.pages import copy_site_assets, make_environment

    root = tmp_path_factory.mktemp("explorer-mkdocs")
    docs = root / "docs"
    copy_site_assets(docs)  # the theme's own scripts (the worker shim it names)
    write_explorer_assets(docs)
    entries = []
    for name, (data, _x, view) in captured.items():
        page = write_explorer(docs, IMAGE_SLUG, MODEL_SLUG[name], data, view)
        entries.append({"manifest": page.manifest, "key": page.key,
                        "label": {VIT: "ViT-FMNIST", SWIN: "Swin-FMNIST"}[name]})
    body = make_environment().get_template("sections/explorer.md.j2").render(extras={"explorers": entries})
    (docs / "images").mkdir()
    (docs / "images" / "sample.md").write_text("# Sample\n\nGo [back home](../index.md).\n\n## Attention explorer\n\n" + body, encoding="utf-8")
    (docs / "index.md").write_text("# Home\n\nSee [the sample](images/sample.md).\n", encoding="utf-8")
    # serve first: material's instant navigation only follows links listed in sitemap.xml, whose
    # URLs it matches with the page's protocol and host but keeps their port, so site_url needs this port
    site_dir = root / "site"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site_dir))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    extra = mkdocs_extra()
    config = root / "mkdocs.yml"
    config.write_text("\n".join([
        f"INHERIT: {json.dumps(str(theme_config()))}",
        "site_name: Explorer test",
        f"site_url: {json.dumps(base)}",
        f"docs_dir: {json.dumps(str(docs))}",
        f"site_dir: {json.dumps(str(site_dir))}",
        "theme:",
        "  name: material",
        "  features: [navigation.instant, navigation.sections, content.tabs.link]",
        "plugins: [search]",  # the theme's offline plugin turns instant navigation off
        f"extra_javascript: {json.dumps(extra['extra_javascript'])}",
        f"extra_css: {json.dumps(extra['extra_css'])}",
        'nav: [{"Home": "index.md"}, {"Sample": "images/sample.md"}]',
    ]) + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(config)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield site_dir, base
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_in_mkdocs_material_with_instant_navigation(browser, mkdocs_site):
    site_dir, base = mkdocs_site
    html = (site_dir / "images" / "sample.html").read_text(encoding="utf-8")
    assert html.count('class="vit-explorer"') == 2 and "assets/vit-explorer/explorer.js" in html
    w = Watched(browser, base).open("images/sample.html")
    assert w.state(0)["key"] == f"vit-fmnist--{IMAGE_SLUG}"
    # the second tab's explorer is built too, and drawn once its tab is shown
    w.page.get_by_text("Swin-FMNIST", exact=True).first.click()
    state = w.wait(1)
    assert state["family"] == "swin"
    w.page.wait_for_function("""() => { const c = document.querySelectorAll('.vx-lines')[1];
        return c.width > 0 && c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v > 0); }""")
    ARTIFACTS = ROOT / "tests" / "artifacts"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    w.page.screenshot(path=str(ARTIFACTS / "explorer-light.png"), full_page=True)
    # instant navigation: away and back without a page load; the explorer comes back
    w.page.evaluate("window.__sameDocument = true")
    w.page.get_by_role("link", name="back home").click()
    w.page.wait_for_function("document.querySelector('h1') && document.querySelector('h1').textContent.includes('Home')")
    w.page.get_by_role("link", name="the sample").click()
    w.page.wait_for_function("document.querySelector('h1') && document.querySelector('h1').textContent.includes('Sample')")
    assert w.page.evaluate("window.__sameDocument === true"), "instant navigation reloaded the page"
    w.page.wait_for_function("VitExplorer.instances().length === 2 && VitExplorer.instances().every(x => document.contains(x.root))")
    state = w.wait(0)
    assert state["key"] == f"vit-fmnist--{IMAGE_SLUG}"
    w.page.get_by_text("ViT-FMNIST", exact=True).first.click()  # content.tabs.link kept the Swin tab
    state = w.click_patch(2, 3, [7, 7])
    assert state["query"]["r"] == 2 and f"vit-fmnist--{IMAGE_SLUG}.query=2,3" in w.page.url
    # a linked view restores on a material page (material looks the hash up as an element id)
    key = f"vit-fmnist--{IMAGE_SLUG}"
    dark = Watched(browser, base)
    dark.page.emulate_media(color_scheme="dark")
    dark.open(f"images/sample.html#{key}.block=2&{key}.head=1&{key}.query=4,5&{key}.mode=rollout")
    state = dark.state(0)
    assert (state["block"], state["head"], state["mode"], state["query"]["r"], state["query"]["c"]) == (2, 1, "rollout", 4, 5)
    assert dark.page.evaluate("document.body.getAttribute('data-md-color-scheme')") == "slate"
    fg = dark.page.evaluate("getComputedStyle(document.querySelector('.vit-explorer')).color")
    light_fg = w.page.evaluate("getComputedStyle(document.querySelector('.vit-explorer')).color")
    assert fg != light_fg
    dark.page.screenshot(path=str(ARTIFACTS / "explorer-dark.png"), full_page=True)
    for x in (w, dark):
        x.check_clean()
        x.page.close()


def test_sparse_top_k_export_decodes_in_js(browser, base, site):
    root, pages, manifests = site
    m = manifests["topk"]
    assert m["quantisation"]["top_k"] == 10 and all(b["top_k"] == 10 for b in m["blocks"])
    w = Watched(browser, base).open("pages/vit-topk.html")
    for b, h, q in [(0, 0, 0), (3, 2, 17), (5, 3, 49)]:
        decoded = read_block(root / pages["topk"].folder, m, b)
        assert np.count_nonzero(decoded[h, q]) <= 10
        js = w.page.evaluate(f"VitExplorer.row(0, {b}, {h}, {q})")
        np.testing.assert_allclose(js, decoded[h, q], rtol=1e-12, atol=0)
    state = w.wait()
    assert np.count_nonzero(state["map"]["values"]) <= 10 * 4  # mean of 4 heads, 10 keys each
    w.check_clean()
    w.page.close()
