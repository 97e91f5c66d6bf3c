"""s3-hf: S3 (Let's Synthesize Step by Step) for the Hugging Face ecosystem."""

from .errors import S3ConfigError, S3DataError, S3Error
from .prompts import PromptSet
from .tasks import TaskSpec, get_task, list_tasks, load_task_yaml, register_task

__version__ = "0.1.0"

_LAZY = {"S3Config": "s3_hf.pipeline", "S3Pipeline": "s3_hf.pipeline"}


def __getattr__(name: str):
    """``S3Pipeline``/``S3Config`` are imported on first use (they pull in torch and transformers)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 's3_hf' has no attribute {name!r}")


__all__ = [
    "PromptSet",
    "S3Config",
    "S3Pipeline",
    "S3ConfigError",
    "S3DataError",
    "S3Error",
    "TaskSpec",
    "get_task",
    "list_tasks",
    "load_task_yaml",
    "register_task",
]
