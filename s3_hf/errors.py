"""Errors raised by s3-hf. Every data error names the file, the line and the field at fault."""

from __future__ import annotations

from pathlib import Path


class S3Error(Exception):
    """Base class of all s3-hf errors."""


class S3DataError(S3Error, ValueError):
    """Bad input data: names the file, the 1-based line (or record index) and the field.

    Args:
        message: what is wrong.
        file: the file being read (or a description such as ``"<in-memory>"``).
        line: 1-based line number in the file.
        field: the field (column) at fault, when one is.
        row: 1-based row (example) index, for the column-list form where one line holds every example.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        row: int | None = None,
    ):
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.row = row
        self.reason = message
        where = []
        if self.file is not None:
            where.append(self.file)
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class S3ConfigError(S3Error, ValueError):
    """A configuration value is invalid; the message prints the bad value."""
