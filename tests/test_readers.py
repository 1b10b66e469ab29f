import json
import os

import pytest

from tunelab.config import build_config
from tunelab.data import load_split, read_records, rows_to_examples
from tunelab.errors import DataError

ROWS = [
    {"id": "a", "dialogue": "hello there", "summary": "greeting"},
    {"id": "b", "dialogue": "bye now", "summary": "farewell"},
]


def _write_all_formats(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {}
    paths["jsonl"] = tmp_path / "d.jsonl"
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    paths["json"] = tmp_path / "d.json"
    paths["json"].write_text(json.dumps(ROWS))
    paths["csv"] = tmp_path / "d.csv"
    paths["csv"].write_text(
        "id,dialogue,summary\n" + "".join(f'{r["id"]},"{r["dialogue"]}",{r["summary"]}\n' for r in ROWS)
    )
    paths["parquet"] = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), paths["parquet"])
    return paths


def test_every_format_reads_the_same_examples(tmp_path):
    for fmt, path in _write_all_formats(tmp_path).items():
        cfg = build_config({"data": {"source": "files", "files": {"train": str(path)}, "id_column": "id"}})
        examples = load_split(cfg.data, "train")
        assert [(e.id, e.input, e.target) for e in examples] == [
            ("a", "hello there", "greeting"),
            ("b", "bye now", "farewell"),
        ], fmt


def test_multiple_reference_columns(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"dialogue": "x y", "s1": "one", "s2": "two", "s3": "three"}) + "\n")
    ex = rows_to_examples(
        read_records(path), source=path, input_column="dialogue", target_columns=["s1", "s2", "s3"], id_column=None
    )
    assert ex[0].references == ("one", "two", "three")
    assert ex[0].target == "one"


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"id": "b", "dialogue": oops}\n')
    with pytest.raises(DataError, match=rf"{path}:2: malformed JSON"):
        read_records(path)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=":1: expected a JSON object"):
        read_records(path)


def test_missing_column_names_the_columns_found(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n")
    with pytest.raises(DataError, match=r"'text' not found; columns present: 'id', 'dialogue', 'summary'"):
        rows_to_examples(
            read_records(path), source=path, input_column="text", target_columns=["summary"], id_column=None
        )


@pytest.mark.parametrize("value", ["", "   \n "])
def test_empty_text_names_line_and_column(tmp_path, value):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({**ROWS[1], "summary": value}) + "\n")
    with pytest.raises(DataError, match=r":2: column 'summary' is empty"):
        rows_to_examples(
            read_records(path), source=path, input_column="dialogue", target_columns=["summary"], id_column=None
        )


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + b'{"dialogue": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r":2: not valid UTF-8"):
        read_records(path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="not a file"):
        read_records(tmp_path)
    locked = tmp_path / "locked.jsonl"
    locked.write_text("{}\n")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as a user that can read any file (root)")
        with pytest.raises(DataError, match="cannot be read"):
            read_records(locked)
    finally:
        locked.chmod(0o644)


def test_unknown_extension_asks_for_a_format(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("x")
    with pytest.raises(DataError, match="data.format"):
        read_records(path)


def test_csv_row_with_extra_fields(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("dialogue,summary\na,b\nc,d,e\n")
    with pytest.raises(DataError, match=":3: more fields"):
        read_records(path)


def test_builtin_dialogsum_test_split_keeps_three_references(dialogsum_dir):
    cfg = build_config({"data": {"path": str(dialogsum_dir)}})
    test = load_split(cfg.data, "test")
    assert len(test) == 500
    assert all(len(e.references) == 3 for e in test)
    assert test[0].id == "test_0"
    train = load_split(cfg.data, "validation")
    assert len(train) == 500 and len(train[0].references) == 1
