"""Where examples come from: built-in named datasets (read from a local folder, with the hub as the
fallback), local files with a column mapping, or a Hugging Face hub dataset."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tunelab.config.schema import DataConfig, SplitConfig
from tunelab.data.readers import read_records
from tunelab.data.layouts import rows_to_layout_examples
from tunelab.data.records import Example, rows_to_examples
from tunelab.errors import DataError
from tunelab.hub import hub_reachable
from tunelab.paths import DATA_DIR_ENV, data_root


@dataclass(frozen=True)
class SplitLayout:
    file: str
    input_column: str
    target_columns: tuple[str, ...]
    id_column: str | None


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    folder: str  # under the data root
    splits: dict[str, SplitLayout]
    hub_id: str
    hub_splits: dict[str, str]
    hub_input: str
    hub_target: str
    hub_id_column: str | None


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "dialogsum": BuiltinDataset(
        name="dialogsum",
        folder="dialogsum",
        splits={
            "train": SplitLayout("dialogsum.train.jsonl", "dialogue", ("summary",), "fname"),
            "validation": SplitLayout("dialogsum.dev.jsonl", "dialogue", ("summary",), "fname"),
            "test": SplitLayout("dialogsum.test.jsonl", "dialogue", ("summary1", "summary2", "summary3"), "fname"),
        },
        hub_id="knkarthick/dialogsum",
        hub_splits={"train": "train", "validation": "validation", "test": "test"},
        hub_input="dialogue",
        hub_target="summary",
        hub_id_column="id",
    ),
    "samsum": BuiltinDataset(
        name="samsum",
        folder="samsum",
        splits={
            "validation": SplitLayout("val.json", "dialogue", ("summary",), "id"),
            "test": SplitLayout("test.json", "dialogue", ("summary",), "id"),
        },
        hub_id="knkarthick/samsum",
        hub_splits={"train": "train", "validation": "validation", "test": "test"},
        hub_input="dialogue",
        hub_target="summary",
        hub_id_column="id",
    ),
}


def _builtin_folder(ds: BuiltinDataset, override: str | None) -> Path | None:
    if override:
        folder = Path(override).expanduser()
        if not folder.is_dir():
            raise DataError(f"data.path {folder} is not a folder")
        return folder
    root = data_root()
    if root is not None and (root / ds.folder).is_dir():
        return root / ds.folder
    return None


def load_builtin(ds: BuiltinDataset, split: str, path_override: str | None) -> list[Example]:
    folder = _builtin_folder(ds, path_override)
    if folder is None:
        return load_hub(
            ds.hub_id,
            ds.hub_splits.get(split, split),
            ds.hub_input,
            (ds.hub_target,),
            ds.hub_id_column,
            hint=f"no local copy of {ds.name} (set {DATA_DIR_ENV} to the folder holding '{ds.folder}/')",
        )
    if split not in ds.splits:
        raise DataError(f"dataset {ds.name} has no split {split!r} locally; splits: {', '.join(ds.splits)}")
    layout = ds.splits[split]
    file = folder / layout.file
    rows = read_records(file)
    return rows_to_examples(
        rows,
        source=file,
        input_column=layout.input_column,
        target_columns=layout.target_columns,
        id_column=layout.id_column,
    )


def load_hub(
    dataset_id: str,
    split: str,
    input_column: str,
    target_columns: Sequence[str],
    id_column: str | None,
    hint: str = "",
    config_name: str | None = None,
    layout: str = "columns",
    roles: dict[str, str] | None = None,
) -> list[Example]:
    """Real hub loading through `datasets` (needs network access to the hub)."""
    if not hub_reachable():
        raise DataError(
            f"{dataset_id!r} split {split!r}: the Hugging Face hub cannot be reached from here"
            + (f" ({hint})" if hint else "")
        )
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, config_name, split=split)
    except Exception as e:
        raise DataError(
            f"could not load {dataset_id!r} split {split!r} from the Hugging Face hub: {e}"
            + (f"\n({hint})" if hint else "")
        ) from None
    rows = [(i, r) for i, r in enumerate(ds)]
    return rows_to_layout_examples(
        rows,
        source=f"hub:{dataset_id}[{split}]",
        layout=layout,
        input_column=input_column,
        target_columns=target_columns,
        id_column=id_column,
        roles=roles,
    )


def _read_file_split(cfg: DataConfig, split: str) -> list[Example]:
    if split not in cfg.files:
        raise DataError(f"data.files has no {split!r} entry; entries: {', '.join(cfg.files) or 'none'}")
    file = Path(cfg.files[split]).expanduser()
    rows = read_records(file, cfg.format)
    return rows_to_layout_examples(
        rows,
        source=file,
        layout=cfg.layout,
        input_column=cfg.input_column,
        target_columns=cfg.target_columns,
        id_column=cfg.id_column,
        roles=cfg.roles,
    )


def split_sizes(n: int, cfg: SplitConfig) -> dict[str, int]:
    validation, test = round(n * cfg.validation), round(n * cfg.test)
    return {"train": n - validation - test, "validation": validation, "test": test}


def _carved(cfg: DataConfig, split: str) -> list[Example]:
    """One split of the training file cut by `data.split`: a seeded shuffle, then test, validation, train."""
    assert cfg.split is not None
    examples = _read_file_split(cfg, cfg.train_split)
    order = list(range(len(examples)))
    random.Random(cfg.split.seed).shuffle(order)
    sizes = split_sizes(len(examples), cfg.split)
    if split not in sizes:
        raise DataError(f"data.split makes the splits train, validation and test, not {split!r}")
    start = {"test": 0, "validation": sizes["test"], "train": sizes["test"] + sizes["validation"]}[split]
    chosen = sorted(order[start : start + sizes[split]])
    if not chosen:
        raise DataError(f"data.split leaves no {split} examples out of {len(examples)}")
    return [examples[i] for i in chosen]


def load_split(cfg: DataConfig, split: str) -> list[Example]:
    """All examples of one split, as the data config describes them."""
    if cfg.source == "files":
        if cfg.split is not None and (split in ("validation", "test") or split == cfg.train_split):
            return _carved(cfg, "train" if split == cfg.train_split else split)
        return _read_file_split(cfg, split)
    if cfg.source.startswith("hub:"):
        return load_hub(
            cfg.source[4:],
            cfg.hub_splits.get(split, split),
            cfg.input_column,
            cfg.target_columns,
            cfg.id_column,
            config_name=cfg.hub_config,
            layout=cfg.layout,
            roles=cfg.roles,
        )
    if cfg.source in BUILTIN_DATASETS:
        return load_builtin(BUILTIN_DATASETS[cfg.source], split, cfg.path)
    raise DataError(
        f"unknown data.source {cfg.source!r}: use one of {', '.join(BUILTIN_DATASETS)}, 'files' or 'hub:<dataset id>'"
    )


def describe_split(cfg: DataConfig) -> dict | None:
    """What `data.split` made of the training file (sizes, seed, the ids held out), for the run's record."""
    if cfg.source != "files" or cfg.split is None:
        return None
    held = {
        name: [e.id for e in load_split(cfg, name)] for name in ("validation", "test") if getattr(cfg.split, name) > 0
    }
    return {
        "file": cfg.files.get(cfg.train_split),
        "seed": cfg.split.seed,
        "sizes": {"train": len(load_split(cfg, cfg.train_split)), **{k: len(v) for k, v in held.items()}},
        "ids": held,
    }
