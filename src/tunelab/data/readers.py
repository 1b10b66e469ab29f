"""Readers for local data files. Every error names the file, and the line or column where it can."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from tunelab.errors import DataError

Row = dict[str, Any]
FORMATS = ("jsonl", "json", "csv", "parquet")


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix in FORMATS:
        return suffix
    raise DataError(
        f"{path}: cannot tell the format from the extension '.{suffix}'; set data.format to one of {', '.join(FORMATS)}"
    )


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None


def read_jsonl(path: Path) -> list[tuple[int, Row]]:
    rows: list[tuple[int, Row]] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a BOM (Excel, Notepad) is dropped
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start})") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON: {e.msg} at column {e.colno}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            rows.append((lineno, obj))
    return rows


def read_json(path: Path) -> list[tuple[int, Row]]:
    try:
        obj = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON: {e.msg} at column {e.colno}") from None
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list):
        raise DataError(f"{path}: expected a JSON list of records (or {{'data': [...]}}), got {type(obj).__name__}")
    out = []
    for i, rec in enumerate(obj):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {i} is a {type(rec).__name__}, expected an object")
        out.append((i, rec))
    return out


def read_csv(path: Path) -> list[tuple[int, Row]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # Excel writes UTF-8 with a BOM
            reader = csv.DictReader(f)
            out = []
            for row in reader:
                if None in row:
                    raise DataError(f"{path}:{reader.line_num}: more fields than the header has")
                out.append((reader.line_num, dict(row)))
            return out
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV: {e}") from None


def read_parquet(path: Path) -> list[tuple[int, Row]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    return list(enumerate(table.to_pylist()))


_READERS = {"jsonl": read_jsonl, "json": read_json, "csv": read_csv, "parquet": read_parquet}


def read_records(path: str | Path, fmt: str = "auto") -> list[tuple[int, Row]]:
    """Rows of a local file as (line or record number, row) pairs."""
    path = Path(path)
    _check_readable(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    return _READERS[fmt](path)
