"""Turn a folder of S3 json data into a Hub-layout dataset repo that ``load_dataset`` reads with no custom code.

```
s3-hf export --task rte --source s3_release/RTE --output rte_s3
python -c "from datasets import load_dataset; print(load_dataset('rte_s3', 'round_1'))"
```

The output holds one parquet file per config (``seed``, ``round_<k>``, ``all``) and a README.md whose YAML
``configs:`` maps each config to its files; push the folder to the Hub as is (``huggingface-cli upload`` or
:mod:`s3_hf.hub`). The output appears whole or not at all: it is built in a sibling temporary folder and renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import datasets

from .builders import build_config, discover_configs
from .card import PARQUET_PATTERN, render_card
from .errors import S3Error
from .tasks import TaskSpec, get_task, list_tasks


def write_config_parquet(repo_dir: str | Path, config: str, dataset: datasets.Dataset) -> Path:
    """Write ``dataset`` as the single parquet shard of ``config`` in a Hub-layout folder; returns the file."""
    path = Path(repo_dir) / PARQUET_PATTERN.format(config=config).replace("*", "00000-of-00001")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    dataset.to_parquet(str(tmp))
    os.replace(tmp, path)
    return path


def _replace_dir(staging: Path, output: Path) -> None:
    """Move ``staging`` to ``output``, replacing an existing ``output`` only once the new one is complete."""
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.replace(output, old)
        os.replace(staging, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, output)


def export_s3_folder(
    task: str | TaskSpec,
    source: str | Path,
    output: str | Path,
    *,
    overwrite: bool = False,
    title: str | None = None,
) -> dict[str, int]:
    """Build every config of ``source`` and write a Hub-layout repo folder to ``output``.

    Returns:
        config name -> number of rows (``all`` included).

    Raises:
        S3DataError: bad json (names the file, line and field); nothing is written then.
        FileExistsError: ``output`` exists and is not empty, without ``overwrite``.
    """
    spec = get_task(task)
    source, output = Path(source), Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    configs = [*discover_configs(source), "all"]
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="s3_hf_export_cache_") as cache:
            sizes: dict[str, int] = {}
            for config in configs:
                dataset = build_config(spec, source, config, cache_dir=cache)
                write_config_parquet(staging, config, dataset)
                sizes[config] = dataset.num_rows
        (staging / "README.md").write_text(render_card(spec, sizes, title=title), encoding="utf-8")
        _replace_dir(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sizes


def main(argv: list[str] | None = None) -> int:
    """``s3-hf export --task T --source DIR --output OUT [--overwrite]``."""
    parser = argparse.ArgumentParser(prog="s3-hf export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, help=f"task name ({', '.join(list_tasks())}) or a task YAML file")
    parser.add_argument(
        "--source", required=True, help="folder of S3 json files (*seed*, *round_<k>*/*additional_<k>*)"
    )
    parser.add_argument("--output", required=True, help="folder to write the Hub-layout dataset repo to")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--title", default=None, help="title of the dataset card")
    args = parser.parse_args(argv)
    try:
        sizes = export_s3_folder(args.task, args.source, args.output, overwrite=args.overwrite, title=args.title)
    except (S3Error, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"output": str(args.output), "rows": sizes}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
