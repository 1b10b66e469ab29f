"""Reading benchmark documents from the local data root (or the hub as a fallback)."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

from tunelab.benchmarks.spec import TaskSpec
from tunelab.data.readers import read_records
from tunelab.errors import DataError
from tunelab.paths import DATA_DIR_ENV, data_root

Doc = dict[str, Any]


def _copa(doc: Doc) -> Doc:
    connector = {"cause": "because", "effect": "therefore"}[doc["question"]]
    lower = lambda s: s[0].lower() + s[1:]  # noqa: E731
    return {**doc, "premise_stem": doc["premise"].strip()[:-1], "connector": connector,
            "choice1_lower": lower(doc["choice1"]), "choice2_lower": lower(doc["choice2"])}


PREPROCESSORS = {"copa": _copa}


def _root(spec: TaskSpec) -> Path | None:
    root = data_root()
    if root is not None and (root / spec.path).exists():
        return root / spec.path
    return None


def _read_tsv(path: Path) -> list[Doc]:
    with open(path, newline="", encoding="utf-8") as f:
        return [dict(r) for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def _read_mmlu(folder: Path, split: str, subjects) -> list[Doc]:
    split_dir = folder / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: no such MMLU split folder")
    files = sorted(split_dir.glob(f"*_{split}.csv"))
    names = [f.name[: -len(f"_{split}.csv")] for f in files]
    wanted = names if subjects == "all" else list(subjects)
    unknown = set(wanted) - set(names)
    if unknown:
        raise DataError(f"unknown MMLU subject(s) {sorted(unknown)}; e.g. {names[:5]}")
    docs = []
    for subject in wanted:
        with open(split_dir / f"{subject}_{split}.csv", newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.reader(f)):
                if len(row) != 6:
                    raise DataError(f"{split_dir / f'{subject}_{split}.csv'}:{i + 1}: expected 6 fields, got {len(row)}")
                q, a, b, c, d, ans = row
                docs.append({"subject": subject, "subject_words": subject.replace("_", " "), "question": q.strip(),
                             "A": a, "B": b, "C": c, "D": d, "answer_index": "ABCD".index(ans.strip())})
    return docs


def _read_parallel(folder: Path, spec: TaskSpec) -> list[Doc]:
    def lines(name: str) -> list[str]:
        return (folder / name).read_text(encoding="utf-8").rstrip("\n").split("\n")

    src = lines(spec.source_file)
    refs = [lines(r) for r in spec.reference_files or []]
    for r, name in zip(refs, spec.reference_files or []):
        if len(r) != len(src):
            raise DataError(f"{folder / name}: {len(r)} lines but the source has {len(src)}")
    return [{"source": s, "references": [r[i] for r in refs]} for i, s in enumerate(src)]


def _from_hub(spec: TaskSpec) -> list[Doc]:
    if spec.hub is None:
        raise DataError(f"task {spec.name}: no local data at <data root>/{spec.path} (set {DATA_DIR_ENV}) "
                        "and no hub fallback")
    import datasets

    try:
        ds = datasets.load_dataset(spec.hub.id, spec.hub.name, split=spec.hub.split)
    except Exception as e:
        raise DataError(f"task {spec.name}: no local data (set {DATA_DIR_ENV}) and the hub failed: {e}") from None
    return [dict(r) for r in ds]


def load_documents(spec: TaskSpec, split: str | None = None) -> list[Doc]:
    """All documents of the task (before `limit`), preprocessed."""
    path = _root(spec)
    if path is None:
        docs = _from_hub(spec)
    elif spec.loader in ("jsonl", "json"):
        docs = [row for _, row in read_records(path, spec.loader)]
    elif spec.loader == "tsv":
        docs = _read_tsv(path)
    elif spec.loader == "mmlu":
        docs = _read_mmlu(path, split or spec.split, spec.subjects)
    else:
        docs = _read_parallel(path, spec)
    if spec.preprocess:
        docs = [PREPROCESSORS[spec.preprocess](d) for d in docs]
    return docs


def select(docs: list[Doc], limit: int | None, seed: int) -> list[Doc]:
    """A fixed, seeded subset (the same examples in every run, before and after fine-tuning)."""
    if not limit or limit >= len(docs):
        return docs
    idx = sorted(random.Random(seed).sample(range(len(docs)), limit))
    return [docs[i] for i in idx]
