"""s3-hf: S3 (Let's Synthesize Step by Step) for the Hugging Face ecosystem."""

from .errors import S3ConfigError, S3DataError, S3Error
from .prompts import PromptSet
from .tasks import TaskSpec, get_task, list_tasks, load_task_yaml, register_task

__version__ = "0.1.0"

__all__ = [
    "PromptSet",
    "S3ConfigError",
    "S3DataError",
    "S3Error",
    "TaskSpec",
    "get_task",
    "list_tasks",
    "load_task_yaml",
    "register_task",
]
