"""The README's usage instructions match the code: its ``s3-hf run`` commands parse, the flags it names exist, and
the names it imports from ``s3_hf`` are exported.

A README that drifts from the CLI is how a new user's first command fails; these checks fail when a flag is renamed
or removed without the README following.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import s3_hf
from s3_hf.config import config_from_args

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section (up to the next ``## `` heading)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def s3_run_commands(text: str) -> list[tuple[int, list[str]]]:
    """``(line number, argv after 's3-hf run')`` of every ``s3-hf run`` command in the README: in its bash blocks
    (backslash continuations joined, comments dropped) and in its inline code spans."""
    commands = []

    def add(line: int, command: str) -> None:
        argv = shlex.split(command, comments=True)
        for i, token in enumerate(argv[:-1]):
            rest = argv[i + 2 :]
            if token.endswith("s3-hf") and argv[i + 1] == "run" and rest and "--help" not in rest:  # a command
                commands.append((line, rest))

    for match in re.finditer(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        first_line = text.count("\n", 0, match.start(1)) + 1
        joined = match.group(1).replace("\\\n", " ")
        for offset, line in enumerate(joined.splitlines()):
            add(first_line + offset, line)
    prose = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
    for match in re.finditer(r"`([^`]*s3-hf run\b[^`]*)`", prose):
        add(prose.count("\n", 0, match.start()) + 1, match.group(1).replace("\n", " "))
    return commands


def run_option_strings() -> set[str]:
    """Every option string ``s3-hf run`` accepts (``--flag_name`` and ``--flag-name`` forms)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(s3_hf.S3Config)
    return {option for action in parser._actions for option in action.option_strings} | {"--config"}


def test_the_readme_has_a_use_section_with_the_callback_the_loop_and_load_dataset():
    use = section(readme_text(), "Use")
    for needed in ("MisclassificationCallback", ".attach(trainer)", "ErrorExtrapolator", "s3-hf run", "load_dataset("):
        assert needed in use, f"README.md '## Use' does not show {needed!r}"


def test_every_s3_hf_run_command_in_the_readme_parses(tmp_path, monkeypatch):
    commands = s3_run_commands(readme_text())
    assert len(commands) >= 6, f"expected the README's s3-hf run commands, found {commands}"
    (tmp_path / "run.yaml").write_text("task: imdb\n")  # the README's --config example
    monkeypatch.chdir(tmp_path)
    for line, argv in commands:
        try:
            config_from_args(argv)
        except (SystemExit, ValueError) as exc:  # argparse's bad value; HfArgumentParser's unknown flag
            pytest.fail(f"README.md line {line}: s3-hf run {' '.join(argv)} does not parse: {exc}")


def test_every_flag_the_use_section_names_is_an_s3_hf_run_flag():
    use = section(readme_text(), "Use")
    prose = re.sub(r"^```.*?^```", "", use, flags=re.S | re.M)  # the code blocks are parsed by the test above
    named = set(re.findall(r"`(--[a-z][a-z0-9_-]*)", prose))
    assert {"--error-pool", "--examples-per-error", "--verifiers"} <= named, named
    unknown = sorted(named - run_option_strings())
    assert not unknown, f"README.md '## Use' names flags s3-hf run does not have: {unknown}"


def test_every_name_the_readme_imports_from_s3_hf_is_exported():
    imported = set()
    for block in code_blocks(readme_text(), "python"):
        for names in re.findall(r"^from s3_hf import (.+)$", block, flags=re.M):
            imported.update(name.strip() for name in names.split(","))
    assert "MisclassificationCallback" in imported, imported
    missing = sorted(name for name in imported if name not in s3_hf.__all__ or not hasattr(s3_hf, name))
    assert not missing, f"README.md imports names s3_hf does not export: {missing}"
