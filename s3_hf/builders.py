"""`datasets` builders that read a folder of S3 json data, one builder per task.

datasets 5 no longer runs loading scripts, so these ``GeneratorBasedBuilder`` subclasses are used directly (or through
:mod:`s3_hf.export`, which turns their output into a Hub-layout parquet repo that ``load_dataset`` reads anywhere).

Configs: ``seed``, ``round_1`` ... ``round_N`` and ``all`` (their union, seed first). Files of the source folder are
assigned to configs by name: ``*round_<k>*`` / ``*round-<k>*`` / ``*additional_<k>*`` (the authors' release, e.g.
``rte_additional_1.json``) go to ``round_<k>``; ``*seed*`` / ``*train*`` / ``*synthetic*`` go to ``seed``.

Example:

```python
>>> from s3_hf.builders import RteS3Builder
>>> builder = RteS3Builder(config_name="round_1", data_dir="s3_release/RTE")
>>> builder.download_and_prepare()
>>> builder.as_dataset("train").features["label"].names
['entailment', 'not_entailment']
```
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import datasets

from .card import config_sort_key
from .errors import S3DataError
from .s3_json import iter_s3_json
from .tasks import TaskSpec, get_task

MAX_ROUNDS = 50
_ROUND = re.compile(r"(?:round|additional)[_-]?(\d+)", re.IGNORECASE)
_SEED = re.compile(r"seed|train|synthetic", re.IGNORECASE)
_SUFFIXES = (".json", ".jsonl")

_CITATION = """@inproceedings{wang-etal-2023-lets,
  title = "Let's Synthesize Step by Step: Iterative Dataset Synthesis with Large Language Models by Extrapolating Errors from Small Models",
  author = "Wang, Ruida and Zhou, Wangchunshu and Sachan, Mrinmaya",
  booktitle = "Findings of the Association for Computational Linguistics: EMNLP 2023",
  year = "2023",
  pages = "11817--11831",
}"""


def config_of_file(path: str | Path) -> str | None:
    """The config a json file belongs to by its name (``round_k`` or ``seed``), or ``None``."""
    name = Path(path).name
    match = _ROUND.search(name)
    if match:
        return f"round_{int(match.group(1))}"
    if _SEED.search(name):
        return "seed"
    return None


def discover_configs(source: str | Path) -> dict[str, list[Path]]:
    """Map each config of a source folder (``seed``, ``round_k``) to its json files, in round order.

    Raises:
        S3DataError: the folder is missing, holds no json, or holds a json file whose name fits no config.
    """
    source = Path(source)
    if not source.is_dir():
        raise S3DataError("is not a folder of S3 json files", file=source)
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix in _SUFFIXES)
    if not files:
        raise S3DataError(f"holds no {'/'.join(_SUFFIXES)} files", file=source)
    configs: dict[str, list[Path]] = {}
    for path in files:
        config = config_of_file(path)
        if config is None:
            raise S3DataError(
                "the file name names no config: use *seed*/*train* for the seed data and *round_<k>* or "
                "*additional_<k>* for error-extrapolation round k",
                file=path,
            )
        configs.setdefault(config, []).append(path)
    return dict(sorted(configs.items(), key=lambda item: config_sort_key(item[0])))


class S3BuilderConfig(datasets.BuilderConfig):
    """A config of an S3 builder: ``seed``, ``round_<k>`` or ``all``."""


class S3DatasetBuilder(datasets.GeneratorBasedBuilder):
    """Builder of the S3 json data of one task (set ``TASK`` in a subclass, or use :func:`builder_class`).

    Pass ``data_dir`` (the folder of json files) and ``config_name``; optionally ``cache_dir``.
    """

    TASK: str | TaskSpec = ""
    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = S3BuilderConfig
    BUILDER_CONFIGS = [
        S3BuilderConfig(name="seed", description="the seed data written by the LLM"),
        S3BuilderConfig(name="all", description="seed and every error-extrapolation round"),
    ] + [
        S3BuilderConfig(name=f"round_{k}", description=f"the data of error-extrapolation round {k}")
        for k in range(1, MAX_ROUNDS + 1)
    ]
    DEFAULT_CONFIG_NAME = "all"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("dataset_name", f"s3_{self.spec.name}")
        super().__init__(*args, **kwargs)

    @classmethod
    def _task_spec(cls) -> TaskSpec:
        if not cls.TASK:
            raise TypeError(f"{cls.__name__} has no TASK; use builder_class(task)")
        return get_task(cls.TASK)

    @property
    def spec(self) -> TaskSpec:
        return self._task_spec()

    def _info(self) -> datasets.DatasetInfo:
        spec = self.spec
        return datasets.DatasetInfo(
            description=f"S3 synthetic data for {spec.name}: {spec.description}.",
            features=spec.features,
            citation=_CITATION,
            homepage="https://aclanthology.org/2023.findings-emnlp.791/",
        )

    def _split_generators(self, dl_manager):
        if not self.config.data_dir:
            raise S3DataError(f"{type(self).__name__} needs data_dir=<folder of S3 json files>")
        configs = discover_configs(self.config.data_dir)
        if self.config.name == "all":
            files = [path for paths in configs.values() for path in paths]
        elif self.config.name in configs:
            files = configs[self.config.name]
        else:
            raise S3DataError(
                f"has no data for config {self.config.name!r}; configs found: {sorted(configs) + ['all']}",
                file=self.config.data_dir,
            )
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"files": [str(p) for p in files]})]

    def _generate_examples(self, files: list[str]):
        spec = self.spec
        for path in files:
            name = Path(path).name
            for index, example in enumerate(iter_s3_json(path, spec)):
                yield f"{name}-{index}", example


class ImdbS3Builder(S3DatasetBuilder):
    """S3 data for IMDb sentiment: ``{"text", "label"}``."""

    TASK = "imdb"


class QnliS3Builder(S3DatasetBuilder):
    """S3 data for QNLI: ``{"text1": sentence, "text2": question, "label"}``."""

    TASK = "qnli"


class RteS3Builder(S3DatasetBuilder):
    """S3 data for RTE: ``{"text1": premise, "text2": hypothesis, "label"}``."""

    TASK = "rte"


class AdqaS3Builder(S3DatasetBuilder):
    """S3 data for AdversarialQA: ``{"context", "question", "answer", "start_idx", "end_idx", "id"}``."""

    TASK = "adqa"


_BUILDERS: dict[str, type[S3DatasetBuilder]] = {
    cls.TASK: cls for cls in (ImdbS3Builder, QnliS3Builder, RteS3Builder, AdqaS3Builder)
}


def builder_class(task: str | TaskSpec) -> type[S3DatasetBuilder]:
    """The builder class of ``task``; one is made (and kept) for a user-registered task."""
    spec = get_task(task)
    builder = _BUILDERS.get(spec.name)
    if builder is None or get_task(builder.TASK) != spec:
        name = "".join(part.capitalize() for part in re.split(r"[_\-]", spec.name)) + "S3Builder"
        builder = type(name, (S3DatasetBuilder,), {"TASK": spec, "__module__": __name__})
        _BUILDERS[spec.name] = builder
    return builder


def build_config(
    task: str | TaskSpec, source: str | Path, config: str, *, cache_dir: str | Path | None = None
) -> datasets.Dataset:
    """Build one config of an S3 json folder into a typed ``datasets.Dataset``.

    Without ``cache_dir`` the build goes to a fresh temporary folder, so an edited json file is never served stale
    from the datasets cache (whose key does not follow file contents for a ``data_dir``).
    """
    if cache_dir is None:
        cache_dir = tempfile.mkdtemp(prefix="s3_hf_build_")
    builder = builder_class(task)(config_name=config, data_dir=str(source), cache_dir=str(cache_dir))
    try:
        builder.download_and_prepare()
    except datasets.exceptions.DatasetGenerationError as err:
        # datasets wraps errors raised while generating; surface ours (file, line, field) as they are
        if isinstance(err.__cause__, S3DataError):
            raise err.__cause__ from None
        raise
    return builder.as_dataset(split="train")
