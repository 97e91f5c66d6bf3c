"""Dataclass fields from a YAML file: the one reader behind ``--config run.yaml`` and task YAML files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .errors import S3ConfigError


def read_yaml_fields(path: str | Path, cls: type) -> dict[str, Any]:
    """The mapping in the YAML file ``path``, checked to hold only fields of the dataclass ``cls``.

    Raises:
        S3ConfigError: the file cannot be read, is not valid YAML (the line is named), is not a mapping, or has a
            key that is no field of ``cls`` (the known fields are listed).
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise S3ConfigError(f"{path}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise S3ConfigError(f"{path}{where}: invalid YAML: {err}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise S3ConfigError(f"{path}: must be a mapping of {cls.__name__} fields, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise S3ConfigError(f"{path}: unknown {cls.__name__} field(s) {unknown}; known: {sorted(names)}")
    return data
