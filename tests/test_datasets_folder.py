"""The project's own S3 json data in Datasets/ reads and exports like any S3 release."""

from pathlib import Path

import pytest
from datasets import load_dataset

from s3_hf.export import export_s3_folder

DATASETS = Path(__file__).resolve().parents[1] / "Datasets"
FOLDERS = sorted(p for p in DATASETS.iterdir() if p.is_dir()) if DATASETS.is_dir() else []


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_shipped_data_exports_and_loads(folder, tmp_path):
    sizes = export_s3_folder(folder.name, folder, tmp_path / "repo")
    assert sizes["all"] == sum(v for k, v in sizes.items() if k != "all") > 0
    for config, rows in sizes.items():
        assert load_dataset(str(tmp_path / "repo"), config, split="train").num_rows == rows
