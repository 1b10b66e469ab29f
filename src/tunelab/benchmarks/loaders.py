"""Reading benchmark documents from the local data root (or the hub as a fallback)."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

from tunelab.benchmarks.spec import TaskSpec
from tunelab.data.readers import read_records
from tunelab.errors import ConfigError, DataError
from tunelab.hub import hub_reachable
from tunelab.paths import DATA_DIR_ENV, data_root

Doc = dict[str, Any]


def _copa(doc: Doc) -> Doc:
    connector = {"cause": "because", "effect": "therefore"}[doc["question"]]
    lower = lambda s: s[0].lower() + s[1:]  # noqa: E731
    return {
        **doc,
        "premise_stem": doc["premise"].strip()[:-1],
        "connector": connector,
        "choice1_lower": lower(doc["choice1"]),
        "choice2_lower": lower(doc["choice2"]),
    }


PREPROCESSORS = {"copa": _copa}


def _resolve(path_text: str) -> Path | None:
    """An absolute path as it is, else relative to the data root; None when it does not exist."""
    path = Path(path_text).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    root = data_root()
    if root is not None and (root / path).exists():
        return root / path
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
                    raise DataError(
                        f"{split_dir / f'{subject}_{split}.csv'}:{i + 1}: expected 6 fields, got {len(row)}"
                    )
                q, a, b, c, d, ans = row
                docs.append(
                    {
                        "subject": subject,
                        "subject_words": subject.replace("_", " "),
                        "question": q.strip(),
                        "A": a,
                        "B": b,
                        "C": c,
                        "D": d,
                        "answer_index": "ABCD".index(ans.strip()),
                    }
                )
    return docs


def _read_parallel(folder: Path, spec: TaskSpec) -> list[Doc]:
    def lines(name: str) -> list[str]:
        return (folder / name).read_text(encoding="utf-8").rstrip("\n").split("\n")

    src = lines(spec.source_file or "")  # required by TaskSpec for this loader
    refs = [lines(r) for r in spec.reference_files or []]
    for r, name in zip(refs, spec.reference_files or []):
        if len(r) != len(src):
            raise DataError(f"{folder / name}: {len(r)} lines but the source has {len(src)}")
    return [{"source": s, "references": [r[i] for r in refs]} for i, s in enumerate(src)]


def _from_hub(spec: TaskSpec) -> list[Doc]:
    if spec.hub is None:
        raise DataError(
            f"task {spec.name}: no local data at <data root>/{spec.path} (set {DATA_DIR_ENV}) and no hub fallback"
        )
    if not hub_reachable():
        raise DataError(
            f"task {spec.name}: no local data at <data root>/{spec.path} (set {DATA_DIR_ENV}) and the "
            "Hugging Face hub cannot be reached from here"
        )
    import datasets

    try:
        ds = datasets.load_dataset(spec.hub.id, spec.hub.name, split=spec.hub.split)
    except Exception as e:
        raise DataError(f"task {spec.name}: no local data (set {DATA_DIR_ENV}) and the hub failed: {e}") from None
    return [dict(r) for r in ds]


def load_documents(spec: TaskSpec, split: str | None = None, *, training: bool = False) -> list[Doc]:
    """All documents of the task's evaluation split (before any limit), preprocessed; with `training`,
    those of its `train_source` instead."""
    path_text = spec.path
    if training and spec.train_source and spec.loader != "mmlu":
        path_text = spec.train_source
    elif training and spec.train_source:
        split = spec.train_source
    path = _resolve(path_text)
    if path is None:
        if training:
            raise DataError(f"task {spec.name}: training documents {path_text} not found (set {DATA_DIR_ENV})")
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


def evaluation_pool(spec: TaskSpec, docs: list[Doc] | None = None) -> list[Doc]:
    """The task's evaluation set: every document any evaluation of it may score, whatever the limit."""
    docs = load_documents(spec) if docs is None else docs
    return docs[: spec.eval_pool] if spec.eval_pool else docs


def evaluation_documents(spec: TaskSpec) -> list[Doc]:
    """The documents one evaluation scores: the first `limit` of the evaluation set, or a seeded `sample` of
    it (nested: a smaller sample is part of a larger one with the same seed), or all of it."""
    pool = evaluation_pool(spec)
    wanted = spec.limit or spec.sample
    if wanted and wanted > len(pool) and spec.eval_pool:
        raise ConfigError(
            f"task {spec.name}: {wanted} documents asked for, but its evaluation set holds "
            f"{len(pool)} (eval_pool; the rest may be training data)"
        )
    if spec.limit:
        return pool[: spec.limit]
    if spec.sample and spec.sample < len(pool):
        order = list(range(len(pool)))
        random.Random(spec.seed).shuffle(order)
        return [pool[i] for i in sorted(order[: spec.sample])]
    return pool


def training_documents(spec: TaskSpec) -> list[Doc]:
    """Documents of the task that training may use: its `train_source`, or those after its evaluation set;
    any document whose prompt equals an evaluation document's (a duplicate) is left out too."""
    from tunelab.benchmarks.prompts import document_key

    all_docs = load_documents(spec)
    pool = evaluation_pool(spec, all_docs)
    if spec.train_source:
        candidates = load_documents(spec, training=True)
    elif len(pool) < len(all_docs):
        candidates = all_docs[len(pool) :]
    else:
        raise ConfigError(
            f"task {spec.name}: every document is in its evaluation set, so none can be trained on "
            "without leaking into the benchmark; give the task file an eval_pool or train_source"
        )
    held = {document_key(spec, d) for d in pool}
    return [d for d in candidates if document_key(spec, d) not in held]
