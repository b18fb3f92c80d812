"""Config validation: every problem is one clear error naming the key; the CLI exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from generator.config.loading import ConfigError, load_config

from .conftest import tiny_config_text, write_synthetic_images


@pytest.fixture
def images(tmp_path):
    write_synthetic_images(tmp_path / "images", count=1)
    return tmp_path / "images"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_resolves_paths(tmp_path, images):
    cfg = load_config(write(tmp_path, tiny_config_text(images, tmp_path)))
    assert cfg.images == images.resolve()
    assert [m.name for m in cfg.models] == ["Tiny ViT", "Tiny Swin"]
    assert cfg.sections.heads.query == "auto"


@pytest.mark.parametrize(
    "extra, key, fragment",
    [
        ("[sections.heads]\nenabeld = true\n", "sections.heads.enabeld", "did you mean 'enabled'"),
        ("[sections.heads]\nscale = \"rows\"\n", "sections.heads.scale", "did you mean 'row'"),
        ("[sections.heads]\nquery = 1.5\n", "sections.heads.query", "expected"),
        ("[sections.heads]\nquery = -3\n", "sections.heads.query", "≥ 0"),
        ("[run]\ndpi = 10\n", "run.dpi", "between 50 and 1200"),
        ("[run]\ndpi = \"high\"\n", "run.dpi", "expected an integer"),
        ("[run]\ndevise = \"cpu\"\n", "run.devise", "did you mean 'device'"),
        ("[sectionz]\n", "sectionz", "did you mean 'sections'"),
        ("batch_size = 0\n", "sections.lime.batch_size", "≥ 1"),
        ("batch_size = \"big\"\n", "sections.lime.batch_size", "auto"),
        ("[sections.probe]\nfeature_batch_size = -1\n", "sections.probe.feature_batch_size", "≥ 1"),
        ("[sections.faithfulness]\nbatch_size = 1.5\n", "sections.faithfulness.batch_size", "expected"),
    ],
)
def test_bad_values_name_the_key(tmp_path, images, extra, key, fragment):
    path = write(tmp_path, tiny_config_text(images, tmp_path, extra))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key
    assert fragment in str(err.value)
    assert str(path) in str(err.value)


def test_batch_sizes_default_to_auto_and_take_integers(tmp_path, images):
    cfg = load_config(write(tmp_path, tiny_config_text(images, tmp_path)))
    assert (cfg.sections.lime.batch_size, cfg.sections.probe.feature_batch_size,
            cfg.sections.faithfulness.batch_size) == ("auto", "auto", "auto")
    cfg = load_config(write(tmp_path, tiny_config_text(images, tmp_path, "batch_size = 10\n")))
    assert cfg.sections.lime.batch_size == 10


def test_model_errors(tmp_path, images):
    base = tiny_config_text(images, tmp_path)
    for old, new, key, fragment in [
        ('weights = "random:0"', 'weights = "hubb"', "models[0].weights", "did you mean 'hub'"),
        ('weights = "random:0"', 'weights = "random:x"', "models[0].weights", "integer seed"),
        ('weights = "random:0"', 'weights = "file:missing.safetensors"', "models[0].weights", "not found"),
        ('name = "Tiny Swin"', 'name = "Tiny ViT"', "models[1].name", "duplicate"),
        ('arch = "vit_fmnist_patch4_28"', 'arch = 3', "models[0].arch", "expected a string"),
        ('weights = "random:0"', 'weights = "random:0"\nimg_size = 4', "models[0].img_size", "≥ 8"),
        ('weights = "random:0"', 'weights = "random:0"\ntimm_kwargs = { img_size = 32 }', "models[0].timm_kwargs",
         "own key 'img_size'"),
        ('weights = "random:0"', 'weights = "random:0"\nnum_classes = 0\nlabels = ["a"]', "models[0]",
         "headless"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, base.replace(old, new, 1)))
        assert err.value.key == key, (new, str(err.value))
        assert fragment in str(err.value)


def test_missing_images_folder_and_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="image folder not found") as err:
        load_config(write(tmp_path, tiny_config_text(tmp_path / "none", tmp_path)))
    assert err.value.key == "images"
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "title = \n"))
    with pytest.raises(ConfigError, match="missing required key") as err:
        load_config(write(tmp_path, 'title = "x"\n'))


def test_cli_exits_2_and_names_the_key(tmp_path, images):
    path = write(tmp_path, tiny_config_text(images, tmp_path, "[sections.heads]\nscael = \"row\"\n"))
    proc = subprocess.run([sys.executable, "-m", "generator", "build", "--config", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "sections.heads.scael" in proc.stderr
    assert "did you mean 'scale'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_shipped_report_config_is_valid():
    from .conftest import ROOT

    cfg = load_config(ROOT / "configs" / "report.toml")
    assert [m.arch for m in cfg.models] == ["vit_base_patch16_224.augreg_in21k_ft_in1k",
                                            "swin_base_patch4_window7_224.ms_in22k_ft_in1k",
                                            "swin_tiny_patch4_window7_224.ms_in1k"]
    assert all(m.weights == "hub" for m in cfg.models)
    assert sorted(p.name for p in cfg.images.glob("*.jpg")) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
    assert (cfg.images / "chelsea.jpg.variants.toml").is_file()
    assert cfg.sections.swin.targets == ((3, 1), (1, 1))


def test_declared_variants_are_validated(tmp_path, images):
    bad = '[sections.perturb.variants]\n"synthetic 0.png" = [{ name = "X", edit = [{ op = "shrink", box = [0, 0, 2, 2] }] }]\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, tiny_config_text(images, tmp_path, bad)))
    assert err.value.key == "sections.perturb.variants.synthetic 0.png"
    assert "unknown op 'shrink'" in str(err.value) and "'X'" in str(err.value)
    missing = '[sections.perturb.variants]\n"nope.png" = [{ name = "X", edit = [{ op = "erase", box = [0, 0, 2, 2] }] }]\n'
    with pytest.raises(ConfigError, match="no image 'nope.png'"):
        load_config(write(tmp_path, tiny_config_text(images, tmp_path, missing)))
