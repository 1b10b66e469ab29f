"""Record layouts: how one record of a data file becomes an Example.

- `columns`: any columns; `data.input_column` is the input, `data.target_columns` the reference(s); every other
  text column can be used by a template placeholder (`{instruction}`).
- `alpaca`: `instruction`, optional `input`, `output` (and optional `system`); rendered with the template
  `{instruction}[[\\n\\n{input}]]` unless `template.custom` says otherwise.
- `sharegpt`: `conversations` of `{from, value}` (`human`/`gpt`/`system` by default, `data.roles` maps others).
- `messages`: OpenAI / TRL chat records, `messages` of `{role, content}` with `system`/`user`/`assistant` and an
  optional per-message `weight` (0 or 1) as in OpenAI's fine-tuning files.

`auto` detects the layout from the first record when that is unambiguous.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from tunelab.data.readers import Row
from tunelab.data.records import Example, rows_to_examples
from tunelab.errors import DataError

Layout = Literal["columns", "alpaca", "sharegpt", "messages"]
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
ALPACA_TEMPLATE = "{instruction}[[\n\n{input}]]"


def detect_layout(first: Row, source: str | Path) -> Layout:
    found = [
        name
        for name, keys in (
            ("messages", ("messages",)),
            ("sharegpt", ("conversations",)),
            ("alpaca", ("instruction", "output")),
        )
        if all(k in first for k in keys)
    ]
    if len(found) > 1:
        raise DataError(f"{source}: the records fit several layouts ({', '.join(found)}); set data.layout")
    return found[0] if found else "columns"  # type: ignore[return-value]


def _row_id(row: Row, id_column: str | None, lineno: int) -> str:
    return str(row[id_column]) if id_column and id_column in row else str(lineno)


def _text(value: Any, source: str | Path, lineno: int, what: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise DataError(f"{source}:{lineno}: {what} is empty or not text")
    return value.strip()


def _alpaca(rows: Sequence[tuple[int, Row]], source: str | Path, id_column: str | None) -> list[Example]:
    out = []
    for lineno, row in rows:
        missing = [k for k in ("instruction", "output") if k not in row]
        if missing:
            raise DataError(f"{source}:{lineno}: alpaca record without {', '.join(missing)}; keys: {', '.join(row)}")
        fields = {
            "instruction": _text(row["instruction"], source, lineno, "'instruction'"),
            "system": _text(row.get("system") or "", source, lineno, "'system'", allow_empty=True),
        }
        out.append(
            Example(
                id=_row_id(row, id_column, lineno),
                input=_text(row.get("input") or "", source, lineno, "'input'", allow_empty=True),
                references=(_text(row["output"], source, lineno, "'output'"),),
                fields=fields,
                system=fields["system"] or None,
                template=ALPACA_TEMPLATE,
            )
        )
    return out


def _messages(
    raw: Any, source: str | Path, lineno: int, key: str, role_key: str, content_key: str, roles: Mapping[str, str]
) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{source}:{lineno}: '{key}' must be a non-empty list of messages")
    out = []
    for i, m in enumerate(raw):
        where = f"{source}:{lineno}: {key}[{i}]"
        if not isinstance(m, dict) or role_key not in m or content_key not in m:
            raise DataError(f"{where} needs '{role_key}' and '{content_key}'")
        role = roles.get(str(m[role_key]))
        if role is None:
            raise DataError(f"{where}: unknown role {m[role_key]!r}; known: {', '.join(roles)} (data.roles maps more)")
        content = m[content_key]
        if not isinstance(content, str):
            raise DataError(f"{where}: '{content_key}' is not text")
        weight = m.get("weight", 1)
        if weight not in (0, 1):
            raise DataError(f"{where}: weight must be 0 or 1, got {weight!r}")
        out.append({"role": role, "content": content.strip(), "weight": int(weight)})
    if out[-1]["role"] != "assistant":
        raise DataError(f"{source}:{lineno}: the conversation must end with an assistant message (the target)")
    if not any(m["role"] == "user" for m in out):
        raise DataError(f"{source}:{lineno}: the conversation has no user message")
    return tuple(out)


def _chats(
    rows: Sequence[tuple[int, Row]],
    source: str | Path,
    layout: Layout,
    id_column: str | None,
    roles: Mapping[str, str] | None,
) -> list[Example]:
    out = []
    for lineno, row in rows:
        if layout == "messages":
            msgs = _messages(
                row.get("messages"),
                source,
                lineno,
                "messages",
                "role",
                "content",
                {"system": "system", "user": "user", "assistant": "assistant", **(roles or {})},
            )
        else:
            msgs = _messages(
                row.get("conversations"),
                source,
                lineno,
                "conversations",
                "from",
                "value",
                {**SHAREGPT_ROLES, **(roles or {})},
            )
        last_user = next(m["content"] for m in reversed(msgs) if m["role"] == "user")
        out.append(
            Example(
                id=_row_id(row, id_column, lineno), input=last_user, references=(msgs[-1]["content"],), messages=msgs
            )
        )
    return out


def rows_to_layout_examples(
    rows: Sequence[tuple[int, Row]],
    *,
    source: str | Path,
    layout: str,
    input_column: str,
    target_columns: Sequence[str],
    id_column: str | None,
    roles: Mapping[str, str] | None = None,
) -> list[Example]:
    """Examples from raw rows in the given layout (`auto`: detected from the first row)."""
    if not rows:
        raise DataError(f"{source}: no records")
    chosen = detect_layout(rows[0][1], source) if layout == "auto" else layout
    if chosen == "alpaca":
        return _alpaca(rows, source, id_column)
    if chosen in ("sharegpt", "messages"):
        return _chats(rows, source, chosen, id_column, roles)  # type: ignore[arg-type]
    return rows_to_examples(
        rows, source=source, input_column=input_column, target_columns=target_columns, id_column=id_column
    )
