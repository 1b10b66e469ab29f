"""Dynamic padding: each batch is padded to its own longest sequence."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import cast

import torch
from torch.utils.data import Dataset

from tunelab.data.encoding import IGNORE_INDEX, Encoded
from tunelab.modeling import Arch


def pad_sequences(seqs: Sequence[list[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    rows = [([value] * (width - len(s)) + s) if left else (s + [value] * (width - len(s))) for s in seqs]
    return torch.tensor(rows, dtype=torch.long)


def padding_mask(seqs: Sequence[list[int]], left: bool = False) -> torch.Tensor:
    return pad_sequences([[1] * len(s) for s in seqs], 0, left)


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class TrainCollator:
    """Pads input ids (pad id) and labels (-100) to the batch's longest sequence, or packs them (`padding_free`).

    Causal batches are right-padded and carry no attention mask. Under causal attention a real token only
    sees positions before it, all real under right padding, so no mask is needed: the loss and gradients are
    those of a masked batch (tested), and the attention kernel takes its causal path, which skips the
    blocks above the diagonal, instead of applying a padding mask over every block (bench/throughput.py).
    Positions then count from 0 in every row without explicit position ids.
    Padding-free causal batches (training/packing.py) are one row: the examples end to end, position ids
    restarting at 0 for each, and no label on each example's first token (so no example's last position learns to
    predict the next example's start).
    Seq2seq batches are right-padded with an attention mask (the encoder attends both ways).
    """

    def __init__(self, pad_token_id: int, arch: Arch, padding_free: bool = False):
        if padding_free and arch != "causal":
            raise ValueError("padding-free batches are for causal models")
        self.pad = pad_token_id
        self.arch = arch
        self.padding_free = padding_free

    def __call__(self, batch: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        ids = [e.input_ids for e in batch]
        if self.padding_free:
            return {
                "input_ids": torch.tensor([[t for s in ids for t in s]]),
                "labels": torch.tensor([[x for e in batch for x in (IGNORE_INDEX, *e.labels[1:])]]),
                "position_ids": torch.tensor([[p for s in ids for p in range(len(s))]]),
            }
        out = {
            "input_ids": pad_sequences(ids, self.pad),
            "labels": pad_sequences([e.labels for e in batch], IGNORE_INDEX),
        }
        if self.arch == "seq2seq":
            out["attention_mask"] = padding_mask(ids)
        return out


def generation_batch(batch: Sequence[Encoded], pad_token_id: int, arch: Arch) -> dict[str, torch.Tensor]:
    """Prompt-only batch; causal models are left-padded so every row's generation starts at the same column."""
    left = arch == "causal"
    ids = [e.input_ids for e in batch]
    return {"input_ids": pad_sequences(ids, pad_token_id, left), "attention_mask": padding_mask(ids, left)}


class LengthGroupedBatches:
    """Batches of similar-length examples (less padding), in a seeded random order each epoch.

    Examples are shuffled, cut into windows of `batch_size * window_batches`, sorted by length inside
    each window, split into batches, and the batches shuffled; like `group_by_length` in transformers.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int, group_by_length: bool = True, window_batches: int = 50
    ):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group = group_by_length
        self.window = batch_size * window_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if self.group:
            windows = [order[i : i + self.window] for i in range(0, len(order), self.window)]
            order = [i for w in windows for i in sorted(w, key=lambda j: -self.lengths[j])]
        out = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.group:
            rng.shuffle(out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


def as_dataset(examples: Sequence[Encoded]) -> Dataset[Encoded]:
    """Encoded examples as a map-style dataset for a DataLoader (a list already is one at run time; torch's
    annotations ask for the class)."""
    return cast("Dataset[Encoded]", list(examples))
