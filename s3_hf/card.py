"""Dataset cards of S3 datasets: the README.md of a Hub-layout repo (YAML ``configs:`` + prose).

:func:`render_card` writes a full card; the YAML header is what lets ``load_dataset(repo, "round_1")`` find each
config's parquet files with no custom code.
"""

from __future__ import annotations

from typing import Any

import yaml

from .tasks import TaskSpec, get_task

PARQUET_PATTERN = "{config}/train-*.parquet"
GENERATED_START = "<!-- s3_hf:generated:start (this block is rewritten on every push; edit outside it) -->"
GENERATED_END = "<!-- s3_hf:generated:end -->"


def config_sort_key(config: str) -> tuple[int, int]:
    """``seed`` first, then ``round_1``, ``round_2``, ..., then ``all``."""
    if config == "seed":
        return (0, 0)
    if config.startswith("round_") and config[6:].isdigit():
        return (1, int(config[6:]))
    return (2, 0)


def card_metadata(
    task: str | TaskSpec, configs: dict[str, int], *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The YAML metadata of a card: ``configs`` (parquet per config, ``all`` the default), tags, s3_hf info."""
    spec = get_task(task)
    names = sorted(configs, key=config_sort_key)
    meta: dict[str, Any] = {
        "configs": [
            {
                "config_name": name,
                "data_files": [{"split": "train", "path": PARQUET_PATTERN.format(config=name)}],
                **({"default": True} if name == "all" else {}),
            }
            for name in names
        ],
        "language": ["en"],
        "tags": ["synthetic", "s3", "error-extrapolation", spec.name],
        "task_categories": ["question-answering" if spec.is_qa else "text-classification"],
        "s3_hf": {
            "task": spec.name,
            "task_version": spec.version,
            "task_fingerprint": spec.fingerprint(),
            "format": "parquet",
            "rows": {name: int(configs[name]) for name in names},
        },
    }
    if extra:
        meta.update(extra)
    return meta


def render_card(
    task: str | TaskSpec,
    configs: dict[str, int],
    *,
    title: str | None = None,
    sections: dict[str, str] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> str:
    """A complete README.md for an S3 dataset repo.

    Args:
        task: the task (name or spec).
        configs: config name -> number of rows.
        title: the card's title; defaults to ``S3 synthetic data: <task>``.
        sections: extra markdown sections (heading -> body), e.g. the per-round table of a run.
        extra_metadata: more YAML metadata (merged at the top level).
    """
    spec = get_task(task)
    meta = card_metadata(spec, configs, extra=extra_metadata)
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    names = sorted(configs, key=config_sort_key)
    rows = "\n".join(f"| `{name}` | {configs[name]:,} |" for name in names)
    fields = ", ".join(f"`{c}`" for c in spec.columns)
    labels = f" Labels: {', '.join(f'{i} = {n}' for i, n in enumerate(spec.label_names))}." if spec.label_names else ""
    body = [
        f"# {title or f'S3 synthetic data: {spec.name}'}",
        "",
        GENERATED_START,
        "",
        f"Synthetic training data for **{spec.name}** ({spec.description}), written by an LLM with S3 "
        "(*Let's Synthesize Step by Step*, EMNLP 2023 Findings): a seed set, then rounds of error extrapolation "
        "from the mistakes a small model makes on real validation data.",
        "",
        f"Columns: {fields}.{labels}",
        "",
        "| config | rows |",
        "|---|---|",
        rows,
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("<this repo or folder>", "round_1")  # or "seed", "all"; revision="round-1" for a version',
        "```",
    ]
    for heading, text in (sections or {}).items():
        body += ["", f"## {heading}", "", text.strip()]
    body += ["", GENERATED_END]
    return f"---\n{header}---\n\n" + "\n".join(body) + "\n"


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """``(metadata, body)`` of a card; a card with no YAML header gives ``({}, text)``."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            meta = yaml.safe_load(text[4:end]) or {}
            body = text[end + 4 :].lstrip("\n")
            return (meta if isinstance(meta, dict) else {}), body
    return {}, text


def _merge_metadata(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        if key == "configs" and isinstance(old.get(key), list):
            by_name = {c.get("config_name"): c for c in old[key] if isinstance(c, dict)}
            if any(c.get("default") for c in value):
                by_name = {n: {k: v for k, v in c.items() if k != "default"} for n, c in by_name.items()}
            by_name.update({c["config_name"]: c for c in value})
            merged[key] = [by_name[n] for n in sorted(by_name, key=lambda n: config_sort_key(str(n)))]
        elif key == "s3_hf" and isinstance(old.get(key), dict):
            rows = {**(old[key].get("rows") or {}), **(value.get("rows") or {})}
            merged[key] = {**old[key], **value, "rows": {n: rows[n] for n in sorted(rows, key=config_sort_key)}}
        elif key == "tags" and isinstance(old.get(key), list):
            merged[key] = list(dict.fromkeys([*old[key], *value]))
        else:
            merged[key] = value
    return merged


def _generated_block(body: str) -> tuple[int, int] | None:
    start = body.find(GENERATED_START)
    end = body.find(GENERATED_END, start + 1) if start != -1 else -1
    return (start, end + len(GENERATED_END)) if start != -1 and end != -1 else None


def merge_card(existing: str, new: str) -> str:
    """Merge a freshly rendered card (:func:`render_card`) into the card already on a repo.

    The YAML metadata is merged key by key: ``configs`` by ``config_name`` (new entries win, old ones stay),
    ``s3_hf`` and its ``rows`` updated, ``tags`` united, other keys from ``new`` replace, keys only in ``existing``
    (``license``, ``pretty_name``, ...) stay. In the body, only the block between :data:`GENERATED_START` and
    :data:`GENERATED_END` is replaced: the title and any prose the user wrote around it survive. A card without that
    block (written by hand) is kept whole and the generated block is appended to it.
    """
    old_meta, old_body = split_card(existing)
    new_meta, new_body = split_card(new)
    meta = _merge_metadata(old_meta, new_meta)
    new_span = _generated_block(new_body)
    old_span = _generated_block(old_body)
    if not old_body.strip() or new_span is None:
        body = new_body if new_span is not None or not old_body.strip() else old_body
    else:
        block = new_body[new_span[0] : new_span[1]]
        if old_span is not None:
            body = old_body[: old_span[0]] + block + old_body[old_span[1] :]
        else:
            body = old_body.rstrip("\n") + "\n\n" + block + "\n"
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{header}---\n\n" + body
