"""Continuous request batching for generation.

Requests wait in a bounded queue; a worker thread takes the oldest, waits a short collection window for
more, and runs every waiting request that can share its forward passes as one `generate` call: same model
group (a base with its adapters, mixed per row through PEFT's `adapter_names`) and same decoding (greedy
together; sampling with equal temperature/top_p together; a seeded request alone, so its seed decides).
Tokens stream back per request as they are produced; a request stops at EOS, its own `max_tokens`, a stop
string, or when its client goes away (its row stops costing compute)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from tunelab.data.collate import generation_batch
from tunelab.data.encoding import Encoded
from tunelab.models.precision import autocast, resolve_precision
from tunelab.serving.pool import ModelPool, ServedModel


class QueueFull(Exception):
    """The server holds as many requests as it accepts; the client should retry later (HTTP 429)."""


@dataclass
class GenerationRequest:
    served: ServedModel
    prompt: Encoded
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = ()
    # filled while it runs
    events: asyncio.Queue | None = None
    loop: asyncio.AbstractEventLoop | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of `text` already streamed
    finish_reason: str | None = None
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def batch_key(self) -> tuple:
        if self.greedy:
            return (self.served.group, "greedy")
        if self.seed is not None:
            return (self.served.group, "seeded", id(self))
        return (self.served.group, "sample", self.temperature, self.top_p)

    def emit(self, event: tuple) -> None:
        if self.loop is not None and self.events is not None:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class _Rows(BaseStreamer, StoppingCriteria):
    """Receives each step's tokens for the whole batch, turns them into per-request text deltas, and tells
    `generate` which rows are done (EOS, max_tokens, a stop string, or a cancelled request)."""

    def __init__(self, requests: list[GenerationRequest], tokenizer, eos_ids: set[int], on_token):
        self.requests, self.tok, self.eos, self.on_token = requests, tokenizer, eos_ids, on_token
        self.first = True

    def put(self, value: torch.Tensor) -> None:
        if self.first:  # generate's first call passes the prompt (or the decoder start)
            self.first = False
            return
        for req, token in zip(self.requests, value.reshape(-1).tolist()):
            if req.finish_reason is not None:
                continue
            if req.cancelled.is_set():
                req.finish_reason = "cancelled"
                continue
            if token in self.eos:
                req.finish_reason = "stop"
                continue
            req.tokens.append(token)
            self.on_token()
            self._update_text(req)
            if req.finish_reason is None and len(req.tokens) >= req.max_tokens:
                req.finish_reason = "length"
            if req.finish_reason is not None:
                self._flush(req)

    def _update_text(self, req: GenerationRequest) -> None:
        text = self.tok.decode(req.tokens, skip_special_tokens=True)
        for s in req.stop:
            cut = text.find(s)
            if cut != -1:
                req.text, req.finish_reason = text[:cut], "stop"
                return
        req.text = text
        hold = max((len(s) for s in req.stop), default=1) - 1  # a stop string may still be forming
        safe = len(text) - hold
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next bytes
            safe = min(safe, len(text) - 1)
        if safe > req.sent:
            req.emit(("delta", text[req.sent : safe]))
            req.sent = safe

    @staticmethod
    def _flush(req: GenerationRequest) -> None:
        if len(req.text) > req.sent:
            req.emit(("delta", req.text[req.sent :]))
            req.sent = len(req.text)

    def end(self) -> None:
        for req in self.requests:
            if req.finish_reason is None:
                req.finish_reason = "length"
            self._flush(req)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        done = [r.finish_reason is not None or r.cancelled.is_set() for r in self.requests]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class Engine:
    def __init__(
        self,
        pool: ModelPool,
        max_batch_size: int = 16,
        window_ms: float = 15.0,
        max_queue: int = 64,
        precision: str = "fp32",
        metrics: Any = None,
    ):
        self.pool, self.max_batch_size, self.window = pool, max_batch_size, window_ms / 1000
        self.precision, self.metrics = precision, metrics
        self._queue: queue.Queue[GenerationRequest] = queue.Queue(maxsize=max_queue)
        self._pending: list[GenerationRequest] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunelab-engine", daemon=True)
        self.batches = 0
        self.largest_batch = 0
        self._in_flight = 0
        self._count_lock = threading.Lock()  # the event loop adds requests, the worker thread finishes them

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _track(self, change: int) -> None:
        with self._count_lock:
            self._in_flight += change

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def depth(self) -> int:
        return self._queue.qsize() + len(self._pending)

    def submit(self, req: GenerationRequest) -> None:
        req.loop = asyncio.get_running_loop()
        req.events = asyncio.Queue()
        try:
            self._queue.put_nowait(req)
        except queue.Full:
            raise QueueFull(f"the server is busy ({self._queue.maxsize} requests waiting); retry later") from None
        self._track(+1)

    # ---- worker -----------------------------------------------------------------------------------
    def _collect(self) -> list[GenerationRequest]:
        if not self._pending:
            try:
                self._pending.append(self._queue.get(timeout=0.1))
            except queue.Empty:
                return []
            deadline = time.perf_counter() + self.window
            while len(self._pending) < self.max_batch_size and (left := deadline - time.perf_counter()) > 0:
                with contextlib.suppress(queue.Empty):
                    self._pending.append(self._queue.get(timeout=left))
        while True:  # whatever else arrived meanwhile
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._pending = [r for r in self._pending if not self._drop_cancelled(r)]
        if not self._pending:
            return []
        key = self._pending[0].batch_key()
        batch = [r for r in self._pending if r.batch_key() == key][: self.max_batch_size]
        self._pending = [r for r in self._pending if r not in batch]
        return batch

    def _drop_cancelled(self, req: GenerationRequest) -> bool:
        if req.cancelled.is_set():
            req.finish_reason = "cancelled"
            self._finish(req)
            return True
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if batch:
                try:
                    self._generate(batch)
                except Exception as e:  # a failed batch fails its requests, never the server
                    for req in batch:
                        req.emit(("error", f"generation failed: {e}"))
                        self._track(-1)

    def _finish(self, req: GenerationRequest) -> None:
        self._track(-1)
        req.emit(("done", req.finish_reason))

    def _generate(self, batch: list[GenerationRequest]) -> None:
        group = self.pool.groups[batch[0].served.group]
        tok = group.tokenizer
        eos = {tok.eos_token_id}
        gen_eos = getattr(group.model.generation_config, "eos_token_id", None)
        eos |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        rows = _Rows(batch, tok, eos, self.metrics.token if self.metrics else (lambda: None))
        first = batch[0]
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(r.max_tokens for r in batch),
            "streamer": rows,
            "stopping_criteria": StoppingCriteriaList([rows]),
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": sorted(eos),
        }
        if first.greedy:
            kwargs.update(do_sample=False, num_beams=1)
        else:
            kwargs.update(do_sample=True, temperature=first.temperature, top_p=first.top_p)
        if hasattr(group.model, "peft_config"):
            kwargs["adapter_names"] = [r.served.adapter for r in batch]
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        with group.lock:
            device = next(group.model.parameters()).device
            inputs = {
                k: v.to(device)
                for k, v in generation_batch([r.prompt for r in batch], tok.pad_token_id, group.arch).items()
            }
            now = time.perf_counter()
            for r in batch:
                r.started = now
            with (
                torch.inference_mode(),
                autocast(device, resolve_precision(self.precision, device)),
                self._seeded(first),
            ):
                if group.arch == "causal" and len(batch) > 1 and min(len(r.prompt.input_ids) for r in batch) > 1:
                    cache = prefill_cache(
                        group.model,
                        [r.prompt.input_ids for r in batch],
                        tok.pad_token_id,
                        kwargs.get("adapter_names"),
                        device,
                    )
                    if cache is not None:
                        kwargs["past_key_values"] = cache
                group.model.generate(**inputs, **kwargs)
        rows.end()
        for req in batch:
            self._finish(req)

    @staticmethod
    @contextlib.contextmanager
    def _seeded(req: GenerationRequest):
        if req.greedy or req.seed is None:
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(req.seed)
            yield


def prefill_cache(
    model, prompts: list[list[int]], pad_id: int, adapter_names: list[str] | None, device, micro_batch: int = 4
):
    """The batch's KV cache for all but each prompt's last token, computed in micro-batches of similar length
    (a left-padded batch of mixed lengths spends most of its prefill on padding), then left-padded to one
    length; `generate` continues from it with each prompt's last token. None for caches of another layout
    (sliding-window or recurrent layers): the caller then prefills the padded batch as usual."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    from tunelab.data.collate import position_ids_from_mask

    width = max(len(p) for p in prompts) - 1
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    rows: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for start in range(0, len(order), micro_batch):
        part = order[start : start + micro_batch]
        batch = {
            k: v.to(device)
            for k, v in generation_batch([Encoded(prompts[i][:-1]) for i in part], pad_id, "causal").items()
        }
        cache = DynamicCache()
        extra = {"adapter_names": [adapter_names[i] for i in part]} if adapter_names is not None else {}
        model(
            **batch,
            position_ids=position_ids_from_mask(batch["attention_mask"]),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **extra,
        )
        if not all(isinstance(layer, DynamicLayer) for layer in cache.layers):
            return None
        for j, i in enumerate(part):
            rows[i] = [(layer.keys[j : j + 1], layer.values[j : j + 1]) for layer in cast(list[Any], cache.layers)]
    merged = DynamicCache()
    for layer in range(len(rows[0])):
        keys, values = [], []
        for i in range(len(prompts)):
            k, v = rows[i][layer]
            keys.append(torch.nn.functional.pad(k, (0, 0, width - k.shape[2], 0)))
            values.append(torch.nn.functional.pad(v, (0, 0, width - v.shape[2], 0)))
        merged.update(torch.cat(keys), torch.cat(values), layer)
    return merged


_ids = itertools.count(1)


def request_id(prefix: str) -> str:
    return f"{prefix}-{int(time.time())}{next(_ids):06d}"
