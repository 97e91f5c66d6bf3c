"""Publishing rounds (s3_hf.hub) to the loopback Hub and to a local git folder, with the real clients."""

import json
import os
import subprocess
import time

import pytest
from conftest import HUB_TOKEN

os.environ.setdefault("OMP_NUM_THREADS", "1")

import datasets  # noqa: E402
from huggingface_hub import HfApi  # noqa: E402
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError  # noqa: E402

from s3_hf.card import render_card  # noqa: E402
from s3_hf.export import write_config_parquet  # noqa: E402
from s3_hf.hub import PublishError, RoundPublisher, load_round, publish_round, round_tag  # noqa: E402
from s3_hf.tasks import get_task  # noqa: E402
from s3_hf.testing.faults import FaultPlan  # noqa: E402

ROUNDS = {
    "seed": [("a gripping, moving film", 1), ("a dull, lifeless film", 0), ("warm and funny", 1)],
    "round_1": [("not bad at all, in fact great", 1), ("great actors wasted on a bad script", 0)],
    "round_2": [("I expected to hate it but loved it", 1)],
}


def stage(tmp_path, task, upto, rounds=ROUNDS, name=None):
    """A staged Hub-layout folder holding every config up to ``upto``, the cumulative ``all`` and the card."""
    spec = get_task(task)
    out = tmp_path / (name or f"stage_{upto}")
    names = list(rounds)[: list(rounds).index(upto) + 1]
    sizes, everything = {}, []
    for config in names:
        rows = [{"text": t, "label": lab} for t, lab in rounds[config]]
        write_config_parquet(out, config, datasets.Dataset.from_list(rows, features=spec.features))
        sizes[config] = len(rows)
        everything += rows
    write_config_parquet(out, "all", datasets.Dataset.from_list(everything, features=spec.features))
    sizes["all"] = len(everything)
    (out / "README.md").write_text(render_card(spec, sizes))
    (out / "run_config.json").write_text(json.dumps({"task": task, "rounds": names}))
    return out


def round_files(config):
    return [
        f"{config}/train-00000-of-00001.parquet",
        "all/train-00000-of-00001.parquet",
        "README.md",
        "run_config.json",
    ]


def texts(config, upto):
    names = list(ROUNDS)[: list(ROUNDS).index(upto) + 1] if config == "all" else [config]
    return [t for n in names for t, _ in ROUNDS[n]]


def commit_ids(repo_id):
    return [c.commit_id for c in HfApi().list_repo_commits(repo_id, repo_type="dataset")]


def test_round_tag_names():
    assert [round_tag("seed"), round_tag("round_1"), round_tag("round_12")] == ["round-0", "round-1", "round-12"]
    with pytest.raises(ValueError, match="'all'"):
        round_tag("all")


def test_each_round_is_one_tagged_commit_and_old_rounds_stay_readable(hub_server, hub_repo_id, tmp_path):
    target = f"hf://datasets/{hub_repo_id}"
    results = [
        publish_round(target, "imdb", name, stage(tmp_path, "imdb", name), round_files(name), backoff_s=0.01)
        for name in ROUNDS
    ]
    assert [r.tag for r in results] == ["round-0", "round-1", "round-2"]
    assert all(r.pushed and r.attempts == 1 for r in results)
    assert commit_ids(hub_repo_id) == [r.commit for r in reversed(results)] + [commit_ids(hub_repo_id)[-1]]
    refs = HfApi().list_repo_refs(hub_repo_id, repo_type="dataset")
    assert {t.name: t.target_commit for t in refs.tags} == {r.tag: r.commit for r in results}
    assert sorted(results[1].changed) == sorted(round_files("round_1"))

    # the data as of round 1, after round 2 was pushed: by tag, by commit sha, streaming
    assert load_round(target, "all", revision="round-1")["text"][:] == texts("all", "round_1")
    assert load_round(target, "all", revision=results[1].commit)["text"][:] == texts("all", "round_1")
    assert load_round(target, "all")["text"][:] == texts("all", "round_2")
    streamed = load_round(target, "round_1", revision="round-1", streaming=True)
    assert [row["text"] for row in streamed] == texts("round_1", "round_1")
    assert load_round(target, "seed", revision="round-0")["label"][:] == [1, 0, 1]


def test_rerunning_a_finished_round_pushes_nothing(hub_server, hub_repo_id, tmp_path):
    target = f"hf://datasets/{hub_repo_id}"
    staged = stage(tmp_path, "imdb", "seed")
    first = publish_round(target, "imdb", "seed", staged)
    before = commit_ids(hub_repo_id)
    commits_posted = hub_server.count_requests("POST", rf"/api/datasets/{hub_repo_id}/commit/")
    again = publish_round(target, "imdb", "seed", staged)
    assert (again.pushed, again.commit, again.changed) == (False, first.commit, [])
    assert commit_ids(hub_repo_id) == before
    assert hub_server.count_requests("POST", rf"/api/datasets/{hub_repo_id}/commit/") == commits_posted
    assert hub_server.count_requests("POST", rf"{hub_repo_id}.git/info/lfs") == 1  # only the first push uploaded


def test_transient_commit_faults_are_retried_into_one_commit(hub_server, hub_repo_id, tmp_path):
    target = f"hf://datasets/{hub_repo_id}"
    publish_round(target, "imdb", "seed", stage(tmp_path, "imdb", "seed"))
    before = commit_ids(hub_repo_id)
    hub_server.fail_next("commit", "500", "429", "drop", retry_after=1)
    staged = stage(tmp_path, "imdb", "round_1")
    started = time.monotonic()
    result = publish_round(target, "imdb", "round_1", staged, backoff_s=0.01)
    assert time.monotonic() - started >= 1.0  # the 429's Retry-After was honoured (backoff alone is ~0.07 s)
    assert hub_server.faults_injected == [("commit", "500"), ("commit", "429"), ("commit", "drop")]
    assert result.attempts == 4 and result.pushed
    assert commit_ids(hub_repo_id) == [result.commit, *before]
    assert load_round(target, "round_1", revision="round-1")["text"][:] == texts("round_1", "round_1")


def test_seeded_random_faults_on_uploads_and_commits(hub_server, hub_repo_id, tmp_path):
    target = f"hf://datasets/{hub_repo_id}"
    plan = FaultPlan({"500": 0.25, "drop": 0.25}, targets=("commit", "lfs_upload"), seed=182, max_faults=3)
    hub_server.inject_faults(plan)
    result = publish_round(target, "imdb", "seed", stage(tmp_path, "imdb", "seed"), backoff_s=0.01, max_attempts=5)
    # seed 182 fails the first LFS upload (retried by huggingface_hub) and drops the first commit (retried by the
    # publisher); the retries draw no fault
    assert hub_server.faults_injected == [("lfs_upload", "500"), ("commit", "drop")]
    assert result.attempts == 2
    assert len(commit_ids(hub_repo_id)) == 2  # "initial commit" + the seed
    assert load_round(target, "all", revision="round-0").num_rows == 3


def test_lost_commit_response_does_not_commit_twice(hub_server, hub_repo_id, tmp_path):
    target = f"hf://datasets/{hub_repo_id}"
    publish_round(target, "imdb", "seed", stage(tmp_path, "imdb", "seed"))
    before = commit_ids(hub_repo_id)
    hub_server.fail_next("commit", "drop_after")  # the commit lands, its answer is lost
    hub_server.fail_next("tag", "drop_after")  # so does the tag
    result = publish_round(target, "imdb", "round_1", stage(tmp_path, "imdb", "round_1"), backoff_s=0.01)
    after = commit_ids(hub_repo_id)
    assert len(after) == len(before) + 1 and result.commit == after[0] and result.pushed and result.attempts == 2
    tags = {t.name: t.target_commit for t in HfApi().list_repo_refs(hub_repo_id, repo_type="dataset").tags}
    assert tags["round-1"] == result.commit


def test_half_finished_push_rerun_completes_without_duplicate_rows(hub_server, hub_repo_id, tmp_path):
    target = f"hf://datasets/{hub_repo_id}"
    publish_round(target, "imdb", "seed", stage(tmp_path, "imdb", "seed"))
    before = commit_ids(hub_repo_id)
    staged = stage(tmp_path, "imdb", "round_1")
    # uploads done, then the commit fails and the run stops
    hub_server.fail_next("commit", "500")
    with pytest.raises(HfHubHTTPError):
        publish_round(target, "imdb", "round_1", staged, max_attempts=1)
    assert commit_ids(hub_repo_id) == before
    assert "round-1" not in {t.name for t in HfApi().list_repo_refs(hub_repo_id, repo_type="dataset").tags}
    lfs_uploads = hub_server.count_requests("PUT", "/_lfs/")

    result = publish_round(target, "imdb", "round_1", staged)
    assert result.pushed and commit_ids(hub_repo_id) == [result.commit, *before]
    assert hub_server.count_requests("PUT", "/_lfs/") == lfs_uploads  # the objects were already there
    assert load_round(target, "all", revision="round-1")["text"][:] == texts("all", "round_1")
    assert load_round(target, "round_1", revision="round-1").num_rows == 2

    # a run that committed but died before tagging: the re-run only tags
    hub_server.fail_next("tag", "500")
    with pytest.raises(HfHubHTTPError):
        publish_round(target, "imdb", "round_2", stage(tmp_path, "imdb", "round_2"), max_attempts=1)
    committed = commit_ids(hub_repo_id)
    rerun = publish_round(target, "imdb", "round_2", stage(tmp_path, "imdb", "round_2", name="again"))
    assert commit_ids(hub_repo_id) == committed and rerun.commit == committed[0] and not rerun.pushed
    assert load_round(target, "all", revision="round-2").num_rows == len(texts("all", "round_2"))


def test_card_merge_keeps_user_prose_and_metadata(hub_server, hub_repo_id, tmp_path):
    target = f"hf://datasets/{hub_repo_id}"
    publish_round(target, "imdb", "seed", stage(tmp_path, "imdb", "seed"))
    api = HfApi()
    card = open(api.hf_hub_download(hub_repo_id, "README.md", repo_type="dataset")).read()
    edited = card.replace("---\n\n# ", "license: cc-by-4.0\n---\n\n# ", 1).replace(
        "<!-- s3_hf:generated:start", "Curated by the s3 team; see our paper.\n\n<!-- s3_hf:generated:start"
    )
    edited += "\n## Limitations\n\nLLM-written reviews; do not use for evaluation.\n"
    api.upload_file(
        path_or_fileobj=edited.encode(),
        path_in_repo="README.md",
        repo_id=hub_repo_id,
        repo_type="dataset",
        commit_message="Edit card",
    )

    publish_round(target, "imdb", "round_1", stage(tmp_path, "imdb", "round_1"))
    merged = open(api.hf_hub_download(hub_repo_id, "README.md", repo_type="dataset")).read()
    for kept in ("license: cc-by-4.0", "Curated by the s3 team; see our paper.", "do not use for evaluation."):
        assert kept in merged
    assert "config_name: round_1" in merged and "| `round_1` | 2 |" in merged and "| `all` | 5 |" in merged
    assert "| `all` | 3 |" not in merged
    info = api.dataset_info(hub_repo_id)
    assert info.card_data["s3_hf"]["rows"] == {"seed": 3, "round_1": 2, "all": 5}
    assert load_round(target, "round_1").num_rows == 2


def test_bad_targets_are_refused_and_nothing_is_overwritten(hub_server, hub_repo_id, tmp_path):
    api = HfApi()
    # a missing repo with create=False
    with pytest.raises(PublishError, match="does not exist.*create=False"):
        publish_round(f"hf://datasets/{hub_repo_id}", "imdb", "seed", stage(tmp_path, "imdb", "seed"), create=False)
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(hub_repo_id, repo_type="dataset")

    # a repo of another task
    target = f"hf://datasets/{hub_repo_id}"
    publish_round(target, "imdb", "seed", stage(tmp_path, "imdb", "seed"))
    before = commit_ids(hub_repo_id)
    with pytest.raises(PublishError, match="task 'imdb'.*not 'rte'"):
        RoundPublisher(target, "rte").publish("seed", stage_rte(tmp_path))
    # a tag that already points to other data
    other = {**ROUNDS, "round_1": [("completely different", 0)]}
    publish_round(target, "imdb", "round_1", stage(tmp_path, "imdb", "round_1"))
    tagged = commit_ids(hub_repo_id)
    with pytest.raises(PublishError, match="tag round-1 .* already points to commit"):
        publish_round(target, "imdb", "round_1", stage(tmp_path, "imdb", "round_1", rounds=other, name="other"))
    assert commit_ids(hub_repo_id) == tagged and len(tagged) == len(before) + 1
    assert load_round(target, "round_1", revision="round-1")["text"][:] == texts("round_1", "round_1")

    # a dataset that s3-hf did not write
    foreign = hub_repo_id + "-foreign"
    datasets.Dataset.from_dict({"text": ["x"], "label": [0]}).push_to_hub(foreign)
    foreign_commits = commit_ids(foreign)
    with pytest.raises(PublishError, match="did not write"):
        publish_round(f"hf://datasets/{foreign}", "imdb", "seed", stage(tmp_path, "imdb", "seed"))
    assert commit_ids(foreign) == foreign_commits


def stage_rte(tmp_path):
    spec = get_task("rte")
    out = tmp_path / "stage_rte"
    rows = [{"premise": "A cat sat.", "hypothesis": "An animal sat.", "label": 0}]
    write_config_parquet(out, "seed", datasets.Dataset.from_list(rows, features=spec.features))
    write_config_parquet(out, "all", datasets.Dataset.from_list(rows, features=spec.features))
    (out / "README.md").write_text(render_card(spec, {"seed": 1, "all": 1}))
    return out


def test_private_repo_publish_and_load_with_token(hub_server, hub_repo_id, tmp_path):
    target = f"hf://datasets/{hub_repo_id}"
    publish_round(target, "imdb", "seed", stage(tmp_path, "imdb", "seed"), private=True, token=HUB_TOKEN)
    assert HfApi().repo_info(hub_repo_id, repo_type="dataset").private
    # (a wrong token first: once loaded, datasets serves its local cache when the Hub refuses)
    with pytest.raises(HfHubHTTPError, match="Invalid credentials"):
        load_round(target, "seed", revision="round-0", token="hf_not_a_token")
    assert load_round(target, "seed", revision="round-0", token=HUB_TOKEN).num_rows == 3
    with pytest.raises(HfHubHTTPError):
        publish_round(target, "imdb", "round_1", stage(tmp_path, "imdb", "round_1"), token="hf_not_a_token")


def git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout


def test_local_git_folder_versions_rounds(tmp_path):
    folder = tmp_path / "runs" / "imdb"
    with pytest.raises(PublishError, match="does not exist and create=False"):
        publish_round(folder, "imdb", "seed", stage(tmp_path, "imdb", "seed"), create=False)
    results = [publish_round(folder, "imdb", n, stage(tmp_path, "imdb", n), round_files(n)) for n in ROUNDS]
    assert [r.tag for r in results] == ["round-0", "round-1", "round-2"] and all(r.pushed for r in results)
    assert git(folder, "log", "--format=%H").split() == [r.commit for r in reversed(results)]
    assert git(folder, "rev-parse", "round-1^{commit}").strip() == results[1].commit

    # plain load_dataset on the folder (working tree = latest round) and any round by tag or sha
    assert datasets.load_dataset(str(folder), "all", split="train")["text"][:] == texts("all", "round_2")
    assert load_round(folder, "all", revision="round-1")["text"][:] == texts("all", "round_1")
    assert load_round(folder, "all", revision=results[0].commit)["text"][:] == texts("all", "seed")
    with pytest.raises(ValueError, match="round_2"):
        load_round(folder, "round_2", revision="round-1")

    # re-run: nothing; other data under an existing tag: refused; user prose in the card survives
    again = publish_round(folder, "imdb", "round_1", stage(tmp_path, "imdb", "round_1", name="again"))
    assert (again.pushed, again.commit) == (False, results[1].commit)
    other = {**ROUNDS, "round_1": [("completely different", 0)]}
    with pytest.raises(PublishError, match="tag round-1 .* already points to commit"):
        publish_round(folder, "imdb", "round_1", stage(tmp_path, "imdb", "round_1", rounds=other, name="other"))
    with pytest.raises(PublishError, match="task 'imdb'.*not 'rte'"):
        publish_round(folder, "rte", "round_3", stage_rte(tmp_path))
    card = folder / "README.md"
    card.write_text(card.read_text() + "\n## Notes\n\nHand-checked by Ada.\n")
    rounds3 = {**ROUNDS, "round_3": [("oddly charming", 1)]}
    r3 = publish_round(folder, "imdb", "round_3", stage(tmp_path, "imdb", "round_3", rounds=rounds3))
    assert r3.pushed and "Hand-checked by Ada." in git(folder, "show", "round-3:README.md")
    assert "| `round_3` | 1 |" in card.read_text()
    assert git(folder, "status", "--porcelain") == ""

    # `git checkout round-1` gives that round
    git(folder, "checkout", "-q", "round-1")
    assert not (folder / "round_2").exists()
    assert datasets.load_dataset(str(folder), "all", split="train").num_rows == len(texts("all", "round_1"))


def test_local_folder_with_foreign_files_is_refused(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PublishError, match="did not write"):
        publish_round(folder, "imdb", "seed", stage(tmp_path, "imdb", "seed"))
    assert sorted(p.name for p in folder.iterdir()) == ["data.csv"]


def test_repo_without_main_branch_is_a_clear_publish_error(hub_server, hub_repo_id, tmp_path, monkeypatch):
    import dataclasses

    HfApi().create_repo(hub_repo_id, repo_type="dataset")
    real = HfApi.list_repo_refs

    def refs_without_main(self, *args, **kwargs):
        refs = real(self, *args, **kwargs)
        return dataclasses.replace(refs, branches=[b for b in refs.branches if b.name != "main"])

    monkeypatch.setattr(HfApi, "list_repo_refs", refs_without_main)
    with pytest.raises(PublishError, match=f"{hub_repo_id} has no 'main' branch"):
        publish_round(f"hf://datasets/{hub_repo_id}", "imdb", "seed", stage(tmp_path, "imdb", "seed"))


def test_local_working_tree_loads_the_latest_rows_not_a_stale_cache(tmp_path):
    """datasets caches a local folder by name and card: a folder rewritten with other rows (same sizes, same card)
    must not load its old rows."""
    folder = stage(tmp_path, "imdb", "seed", name="dataset")
    assert load_round(folder, "all")["text"][:] == texts("all", "seed")
    other = {"seed": [("a quiet, tender film", 1), ("a loud, empty film", 0), ("sharp and smart", 1)]}
    stage(tmp_path, "imdb", "seed", rounds=other, name="dataset")
    assert load_round(folder, "all")["text"][:] == [t for t, _ in other["seed"]]
