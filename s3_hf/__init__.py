"""s3-hf: S3 (Let's Synthesize Step by Step) for the Hugging Face ecosystem."""

from .errors import S3ConfigError, S3DataError, S3Error
from .prompts import PromptSet
from .tasks import TaskSpec, get_task, list_tasks, load_task_yaml, register_task

__version__ = "0.1.0"

_LAZY = {
    "S3Config": "s3_hf.config",
    "S3Pipeline": "s3_hf.pipeline",
    "MisclassificationCallback": "s3_hf.callback",
    "MisclassificationTrainer": "s3_hf.callback",
    "MisclassificationTrainerMixin": "s3_hf.callback",
    "LLMLabelVerifier": "s3_hf.verification",
    "StudentLabelVerifier": "s3_hf.verification",
    "build_trainer": "s3_hf.training",
    "ErrorExtrapolator": "s3_hf.extrapolation",
    "SeedSynthesizer": "s3_hf.synthesis",
    "LLMConfig": "s3_hf.llm_config",
    "LLMEngine": "s3_hf.llm_engine",
    "publish_round": "s3_hf.hub",
    "load_round": "s3_hf.hub",
    "load_gold": "s3_hf.gold",
    "export_s3_folder": "s3_hf.export",
}


def __getattr__(name: str):
    """The heavy parts (torch, transformers, openai) are imported on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 's3_hf' has no attribute {name!r}")


__all__ = [
    "ErrorExtrapolator",
    "LLMConfig",
    "LLMEngine",
    "LLMLabelVerifier",
    "MisclassificationCallback",
    "MisclassificationTrainer",
    "MisclassificationTrainerMixin",
    "PromptSet",
    "SeedSynthesizer",
    "StudentLabelVerifier",
    "build_trainer",
    "export_s3_folder",
    "load_gold",
    "load_round",
    "publish_round",
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
