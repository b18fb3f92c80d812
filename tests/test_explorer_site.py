"""The explorer inside a built gallery: exported by the build, shown on image pages, served and from file://."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import numpy as np
import pytest

import generator
from generator.config.loading import load_config
from generator.attention.explorer import decode_block, quantisation_error_bound

from .conftest import write_synthetic_images
from .test_explorer import Watched, browser  # noqa: F401  (the module-scoped Chromium fixture)

ONLY_EXPLORER = "\n".join(f"[sections.{name}]\nenabled = false" for name in
                          ("heads", "rollout", "swin", "lime", "maps", "perturb", "probe", "faithfulness"))


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer-site")
    write_synthetic_images(root / "images", count=2, size=28)
    config = root / "gallery.toml"
    config.write_text(f"""
title = "Explorer"
images = "{root / 'images'}"
output = "{root / 'build'}"
site_dir = "{root / 'site'}"
[[models]]
name = "ViT"
arch = "vit_fmnist_patch4_28"
weights = "random:0"
[[models]]
name = "Swin"
arch = "swin_fmnist_patch2_28"
weights = "random:1"
{ONLY_EXPLORER}
""", encoding="utf-8")
    outcome = generator.build(load_config(config))
    assert outcome.exit_code == 0, [f.error for f in outcome.run.failures] + [outcome.site_error]
    return root


@pytest.fixture(scope="module")
def served(gallery):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(gallery / "site"))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_build_exports_every_image_and_model_under_its_own_slugs(gallery):
    docs = gallery / "build" / "docs"
    manifests = sorted(p.relative_to(docs).as_posix() for p in docs.glob("explorer/*/*/manifest.json"))
    assert manifests == [f"explorer/{m}/{i}/manifest.json" for m in ("swin", "vit")
                         for i in ("synthetic-0", "synthetic-1")]
    for path in docs.glob("explorer/*/*/manifest.json"):
        manifest = json.loads(path.read_text())
        assert manifest["key"] == f"{path.parent.parent.name}--{path.parent.name}"
    page = (docs / "images" / "synthetic-0.md").read_text()
    assert 'data-manifest="explorer/vit/synthetic-0/manifest.js"' in page
    assert 'data-manifest="explorer/swin/synthetic-0/manifest.js"' in page
    from generator.site.resources import theme_config

    theme = theme_config().read_text()  # every page loads the explorer's assets (the theme lists them)
    assert "assets/vit-explorer/explorer.js" in theme and "assets/vit-explorer/explorer.css" in theme
    assert (docs / "assets" / "vit-explorer" / "explorer.js").is_file()
    assert (gallery / "site" / "assets" / "vit-explorer" / "explorer.js").is_file()


@pytest.mark.parametrize("transport", ["http", "file"])
def test_image_page_explorer_matches_the_captured_attention(gallery, served, browser, transport):  # noqa: F811
    import torch

    from generator.attention.capture import vit_attention
    from generator.config.loading import ModelConfig
    from generator.data.images import scan_images
    from generator.models.loaded import load_model
    from generator.data.inputs import prepare_input

    base = served if transport == "http" else (gallery / "site").as_uri() + "/"
    w = Watched(browser, base).open("images/synthetic-0.html")
    state = w.state(0)
    assert state["family"] == "vit" and not state["error"]
    grid = (7, 7)
    w.page.locator(".vx-overlay").nth(0).scroll_into_view_if_needed()
    state = w.click_patch(2, 3, grid, 0)
    assert state["query"]["token"] == 1 + 2 * 7 + 3
    # the same row from the model itself, within the stated quantisation error
    model = load_model(ModelConfig(name="ViT", arch="vit_fmnist_patch4_28", weights="random:0"))
    image = next(i for i in scan_images(gallery / "images")[0] if i.slug == "synthetic-0")
    with torch.inference_mode():
        _, attn = vit_attention(model.module, prepare_input(model, image).x[None])
    block, token = state["block"], state["query"]["token"]
    rows = attn[block, 0, :, token].double().numpy()  # heads, N
    exact = rows.mean(0)[1:] if state["head"] == "mean" else rows[state["head"]][1:]
    bound = float(quantisation_error_bound(np.asarray(rows.max(-1))).max())
    assert np.abs(np.asarray(state["map"]["values"]) - exact).max() <= bound
    w.check_clean()
    w.page.close()


def test_exported_blocks_decode_to_the_cached_attention(gallery):
    docs = gallery / "build" / "docs"
    manifest = json.loads((docs / "explorer" / "vit" / "synthetic-1" / "manifest.json").read_text())
    first = manifest["blocks"][0]
    raw = (docs / "explorer" / "vit" / "synthetic-1" / first["file"]).read_text()
    import base64

    payload = base64.b64decode(raw.split('"')[3])
    decoded = decode_block(payload, first["heads"], first["tokens"])
    assert decoded.shape == (first["heads"], first["tokens"], first["tokens"])
    np.testing.assert_allclose(decoded.sum(-1), 1.0, atol=first["tokens"] / 255)
