"""The loopback Hub with the real clients: push_to_hub per config, tags, load_dataset by tag/sha/streaming, auth,
client-side retries of LFS uploads, paginated listings."""

import os

import pytest
from conftest import HUB_OTHER_TOKEN, HUB_TOKEN

os.environ.setdefault("OMP_NUM_THREADS", "1")

import datasets  # noqa: E402
from huggingface_hub import HfApi  # noqa: E402
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError  # noqa: E402

SEED = {"text": ["good film", "bad film", "fine film"], "label": [1, 0, 1]}
ROUND_1 = {"text": ["awful plot", "superb cast"], "label": [0, 1]}


def test_push_each_config_tag_then_load_by_tag_sha_and_streaming(hub_server, hub_repo_id):
    api = HfApi()
    seed_commit = datasets.Dataset.from_dict(SEED).push_to_hub(hub_repo_id, config_name="seed").oid
    api.create_tag(hub_repo_id, tag="round-0", revision=seed_commit, repo_type="dataset")
    round_commit = datasets.Dataset.from_dict(ROUND_1).push_to_hub(hub_repo_id, config_name="round_1").oid
    api.create_tag(hub_repo_id, tag="round-1", revision=round_commit, repo_type="dataset")

    refs = api.list_repo_refs(hub_repo_id, repo_type="dataset")
    assert {t.name: t.target_commit for t in refs.tags} == {"round-0": seed_commit, "round-1": round_commit}
    assert [c.commit_id for c in api.list_repo_commits(hub_repo_id, repo_type="dataset")][:2] == [
        round_commit,
        seed_commit,
    ]

    assert datasets.load_dataset(hub_repo_id, "seed", revision="round-0", split="train")["text"][:] == SEED["text"]
    by_sha = datasets.load_dataset(hub_repo_id, "round_1", revision=round_commit, split="train")
    assert by_sha["text"][:] == ROUND_1["text"] and by_sha["label"][:] == ROUND_1["label"]
    streamed = datasets.load_dataset(hub_repo_id, "round_1", revision="round-1", split="train", streaming=True)
    assert [row["text"] for row in streamed] == ROUND_1["text"]
    with pytest.raises(ValueError, match="round_1"):  # round_1 did not exist yet at round-0
        datasets.load_dataset(hub_repo_id, "round_1", revision="round-0", split="train")


def test_private_repo_needs_the_owners_token(hub_server, hub_repo_id):
    api = HfApi(token=HUB_TOKEN)
    api.create_repo(hub_repo_id, repo_type="dataset", private=True)
    datasets.Dataset.from_dict(SEED).push_to_hub(hub_repo_id, config_name="seed", token=HUB_TOKEN)
    assert api.repo_info(hub_repo_id, repo_type="dataset").private is True

    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).repo_info(hub_repo_id, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=HUB_OTHER_TOKEN).repo_info(hub_repo_id, repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as wrong:
        HfApi(token="hf_wrong_token").repo_info(hub_repo_id, repo_type="dataset")
    assert wrong.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as forbidden:  # someone else cannot write either
        HfApi(token=HUB_OTHER_TOKEN).create_tag(hub_repo_id, tag="x", repo_type="dataset")
    assert forbidden.value.response.status_code in (403, 404)
    with pytest.raises(HfHubHTTPError, match="Invalid credentials"):
        datasets.load_dataset(hub_repo_id, "seed", split="train", token="hf_wrong_token")
    with pytest.raises(datasets.exceptions.DatasetNotFoundError):
        datasets.load_dataset(hub_repo_id, "seed", split="train", token=False)
    assert datasets.load_dataset(hub_repo_id, "seed", split="train", token=HUB_TOKEN).num_rows == 3


def test_client_retries_injected_lfs_upload_faults(hub_server, hub_repo_id, tmp_path):
    api = HfApi()
    api.create_repo(hub_repo_id, repo_type="dataset")
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict(SEED).to_parquet(str(tmp_path / "data" / "train.parquet"))
    hub_server.fail_next("lfs_upload", "500", "drop")
    hub_server.fail_next("preupload", "429", retry_after=0)
    commit = api.upload_folder(repo_id=hub_repo_id, folder_path=tmp_path / "data", repo_type="dataset")
    assert hub_server.faults_injected == [("preupload", "429"), ("lfs_upload", "500"), ("lfs_upload", "drop")]
    (info,) = api.get_paths_info(hub_repo_id, ["train.parquet"], repo_type="dataset", revision=commit.oid)
    assert info.lfs is not None and info.lfs.size == (tmp_path / "data" / "train.parquet").stat().st_size
    assert datasets.load_dataset(hub_repo_id, split="train")["text"][:] == SEED["text"]


def test_listings_paginate_and_unknown_revisions_fail(hub_server, hub_repo_id):
    api = HfApi()
    api.create_repo(hub_repo_id, repo_type="dataset")
    for i in range(3):
        api.upload_file(
            path_or_fileobj=f"v{i}".encode(),
            path_in_repo=f"notes/n{i}.txt",
            repo_id=hub_repo_id,
            repo_type="dataset",
            commit_message=f"note {i}",
        )
    hub_server.tree_page_size, hub_server.commits_page_size = 2, 2
    try:
        titles = [c.title for c in api.list_repo_commits(hub_repo_id, repo_type="dataset")]
        files = api.list_repo_files(hub_repo_id, repo_type="dataset")
    finally:
        hub_server.tree_page_size, hub_server.commits_page_size = 1000, 50
    assert titles == ["note 2", "note 1", "note 0", "initial commit"]
    assert sorted(files) == [".gitattributes", "notes/n0.txt", "notes/n1.txt", "notes/n2.txt"]
    with pytest.raises(RevisionNotFoundError):
        api.repo_info(hub_repo_id, repo_type="dataset", revision="no-such-tag")
