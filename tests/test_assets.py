"""Offline assets: the packaging extra agrees with the asset table; checksums are enforced."""

import configparser
from pathlib import Path

import pytest

from s3_hf import assets

ROOT = Path(__file__).resolve().parents[1]


def test_assets_extra_lists_exactly_the_packages_that_install_with_deps():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extra = {line.strip() for line in cfg["options.extras_require"]["assets"].splitlines() if line.strip()}
    table = set(assets.requirements(no_deps=False))
    assert extra == table


def test_every_asset_is_installed_and_verified():
    paths = assets.verify_all()
    assert set(paths) == set(assets.ASSETS)
    assert (assets.encoder_path() / "config.json").is_file()


def test_a_wrong_checksum_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not the model")
    with pytest.raises(assets.AssetError, match="sha256 of .*model.gguf is"):
        assets._check(fake, "0" * 64, "fake")


def test_multi_part_model_is_assembled_once_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("S3_HF_CACHE", str(tmp_path))
    path = assets.gguf_path("qwen2.5-coder-0.5b")
    assert path.parent == tmp_path / "models" and path.stat().st_size > 400_000_000
    assert not list(tmp_path.glob("models/*.tmp*"))
