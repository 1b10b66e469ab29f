"""The HTTP API, in the shapes of OpenAI's API and vLLM's LoRA extensions.

Routes: GET /v1/models; POST /v1/chat/completions and /v1/completions (`stream: true` as server-sent
events); POST /v1/load_lora_adapter and /v1/unload_lora_adapter (only when enabled, only for paths under
the allowed folders); GET /health; GET /metrics (Prometheus); GET / (the playground).

tunelab's extra request field: `"task_prompt": true` applies the model's own training prompt (its task
template, and the chat template) to the raw input -- the last user message, or `prompt` -- so a client sends
just the dialogue and gets what `tunelab generate --run` gives.

Errors are OpenAI-shaped: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.errors import TunelabError
from tunelab.serving.engine import Engine, GenerationRequest, QueueFull, request_id
from tunelab.serving.pool import ModelPool, ServedModel


@dataclass
class ServerSettings:
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int = 4096
    max_tokens: int = 1024
    default_max_tokens: int = 256
    adapter_dirs: list[Path] = field(default_factory=list)  # load_lora_adapter allowed under these
    examples: list[dict[str, str]] = field(default_factory=list)  # playground picker


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def _error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}, status_code=status
    )


# ---- request bodies ----------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields tunelab ignores (user, n=1, ...)
    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)
    task_prompt: bool = False

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop if s]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionBody(_Body):
    prompt: str

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt is empty")
        return v


class LoadAdapterBody(BaseModel):
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class UnloadAdapterBody(BaseModel):
    lora_name: str = Field(min_length=1)


# ---- the app -----------------------------------------------------------------------------------------
class _Metrics:
    def __init__(self, engine_ref):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tunelab_requests", "Requests by route and status", ["route", "status"], registry=self.registry
        )
        self.tokens = Counter("tunelab_generated_tokens", "Generated tokens", registry=self.registry)
        self.prompt_tokens = Counter("tunelab_prompt_tokens", "Prompt tokens", registry=self.registry)
        self.latency = Histogram(
            "tunelab_request_latency_seconds",
            "Request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
        )
        queue = Gauge("tunelab_queue_depth", "Requests waiting for the engine", registry=self.registry)
        queue.set_function(lambda: engine_ref().depth if engine_ref() else 0)
        running = Gauge("tunelab_requests_in_flight", "Requests accepted and not finished", registry=self.registry)
        running.set_function(lambda: engine_ref().in_flight if engine_ref() else 0)

    def token(self) -> None:
        self.tokens.inc()


class _BodyLimit:
    """Refuses bodies over the limit with 413 before they are read whole (Content-Length or streamed)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _error(
                413, f"request body over {self.limit} bytes", "invalid_request_error", code="body_too_large"
            )(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, f"request body over {self.limit} bytes", code="body_too_large")
            return message

        return await self.app(scope, limited, send)


def _events(req: GenerationRequest) -> asyncio.Queue:
    if req.events is None:  # the engine sets it when the request is submitted
        raise RuntimeError("request was not submitted to the engine")
    return req.events


def create_app(pool: ModelPool, engine: Engine, settings: ServerSettings) -> _BodyLimit:
    app = FastAPI(title="tunelab", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = _Metrics(lambda: engine)
    engine.metrics = metrics
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return _error(e.status, e.message, e.type, e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            message, loc = "the request body is not valid JSON", []
        return _error(
            400, f"{'.'.join(loc) + ': ' if loc else ''}{message}", "invalid_request_error", ".".join(loc) or None
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        return _error(e.status_code, str(e.detail), "invalid_request_error" if e.status_code < 500 else "server_error")

    @app.exception_handler(TunelabError)
    async def _tunelab(request: Request, e: TunelabError):
        return _error(400, str(e), "invalid_request_error")

    @app.middleware("http")
    async def _auth_and_count(request: Request, call_next):
        route = request.url.path
        if settings.api_key and route.startswith("/v1"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
                metrics.requests.labels(route, "401").inc()
                return _error(
                    401,
                    "missing or wrong API key (Authorization: Bearer <key>)",
                    "authentication_error",
                    code="invalid_api_key",
                )
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except ApiError as e:  # raised while the body was read (size limit)
            response = _error(e.status, e.message, e.type, e.param, e.code)
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - t0)
        return response

    def served(name: str) -> ServedModel:
        if name not in pool.models:
            raise ApiError(
                404,
                f"model {name!r} is not served; models: {', '.join(pool.models)}",
                param="model",
                code="model_not_found",
            )
        return pool.models[name]

    def limits(body: _Body, prompt_len: int, served_model: ServedModel) -> int:
        if prompt_len > settings.max_prompt_tokens:
            raise ApiError(
                400,
                f"the prompt has {prompt_len} tokens; this server accepts at most {settings.max_prompt_tokens}",
                param="messages",
                code="context_length_exceeded",
            )
        wanted = body.max_completion_tokens or body.max_tokens
        if wanted is None:
            wanted = (
                served_model.task.max_new_tokens
                if body.task_prompt and served_model.task
                else settings.default_max_tokens
            )
        if wanted > settings.max_tokens:
            raise ApiError(
                400, f"max_tokens {wanted} is over this server's limit of {settings.max_tokens}", param="max_tokens"
            )
        window = pool.groups[served_model.group].max_length
        if pool.groups[served_model.group].arch == "causal" and prompt_len + wanted > window:
            raise ApiError(
                400,
                f"prompt ({prompt_len}) + max_tokens ({wanted}) exceed the model's window of {window}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return wanted

    async def run(body: _Body, served_model: ServedModel, prompt, request: Request, kind: str):
        max_tokens = limits(body, len(prompt.input_ids), served_model)
        req = GenerationRequest(served_model, prompt, max_tokens, body.temperature, body.top_p, body.seed, body.stops())
        try:
            engine.submit(req)
        except QueueFull as e:
            raise ApiError(429, str(e), "rate_limit_error", code="queue_full") from None
        metrics.prompt_tokens.inc(len(prompt.input_ids))
        rid = request_id("chatcmpl" if kind == "chat" else "cmpl")
        if body.stream:
            return StreamingResponse(_stream(req, request, rid, kind, body.model), media_type="text/event-stream")
        watcher = asyncio.create_task(_watch_disconnect(request, req))
        try:
            finish = await _drain(req)
        finally:
            watcher.cancel()
        text = req.text.strip() if body.task_prompt else req.text
        usage = {
            "prompt_tokens": len(prompt.input_ids),
            "completion_tokens": len(req.tokens),
            "total_tokens": len(prompt.input_ids) + len(req.tokens),
        }
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            return {
                "id": rid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.model,
                "choices": [choice],
                "usage": usage,
            }
        return {
            "id": rid,
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        }

    async def _drain(req: GenerationRequest) -> str:
        events = _events(req)
        while True:
            kind, *rest = await events.get()
            if kind == "done":
                return rest[0]
            if kind == "error":
                raise ApiError(500, rest[0], "server_error")

    async def _watch_disconnect(request: Request, req: GenerationRequest) -> None:
        while not req.cancelled.is_set():
            if await request.is_disconnected():
                req.cancelled.set()
                return
            await asyncio.sleep(0.1)

    async def _stream(req: GenerationRequest, request: Request, rid: str, kind: str, model: str) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(delta: str | None, finish: str | None, first: bool = False) -> str:
            if kind == "chat":
                d: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
                if delta:
                    d["content"] = delta
                choice = {"index": 0, "delta": d, "finish_reason": finish}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
                obj = "text_completion"
            return (
                "data: "
                + json.dumps({"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]})
                + "\n\n"
            )

        try:
            if kind == "chat":
                yield chunk(None, None, first=True)
            while True:
                event, *rest = await _events(req).get()
                if event == "delta":
                    yield chunk(rest[0], None)
                elif event == "done":
                    usage = {
                        "prompt_tokens": len(req.prompt.input_ids),
                        "completion_tokens": len(req.tokens),
                        "total_tokens": len(req.prompt.input_ids) + len(req.tokens),
                    }
                    final = json.loads(chunk(None, rest[0])[6:])
                    final["usage"] = usage
                    yield "data: " + json.dumps(final) + "\n\n"
                    yield "data: [DONE]\n\n"
                    return
                else:
                    yield (
                        "data: "
                        + json.dumps(
                            {"error": {"message": rest[0], "type": "server_error", "param": None, "code": None}}
                        )
                        + "\n\n"
                    )
                    return
        finally:  # the client went away (or the stream ended): its row stops costing compute
            req.cancelled.set()

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "models": list(pool.models),
            "queue_depth": engine.depth,
            "in_flight": engine.in_flight,
            "batches": engine.batches,
            "largest_batch": engine.largest_batch,
        }

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [
                {
                    "id": m.id,
                    "object": "model",
                    "created": created,
                    "owned_by": "tunelab",
                    "root": m.root,
                    "parent": m.parent,
                    "max_model_len": pool.groups[m.group].max_length,
                }
                for m in pool.models.values()
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, request: Request):
        m = served(body.model)
        messages = [{"role": x.role, "content": x.content} for x in body.messages]
        prompt = await asyncio.to_thread(pool.chat_prompt, m, messages, body.task_prompt)
        return await run(body, m, prompt, request, "chat")

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request):
        m = served(body.model)
        prompt = await asyncio.to_thread(pool.completion_prompt, m, body.prompt, body.task_prompt)
        return await run(body, m, prompt, request, "completion")

    def allowed(path: str) -> Path:
        if not settings.adapter_dirs:
            raise ApiError(
                404,
                "adapter loading is off (start the server with --allow-adapter-loading DIR)",
                code="adapter_loading_disabled",
            )
        resolved = Path(path).expanduser().resolve()
        if not any(resolved.is_relative_to(d.resolve()) for d in settings.adapter_dirs):
            raise ApiError(
                403, f"{path} is not under a folder this server may load adapters from", "permission_error", "lora_path"
            )
        return resolved

    @app.post("/v1/load_lora_adapter")
    async def load_adapter(body: LoadAdapterBody):
        path = allowed(body.lora_path)
        if body.lora_name in pool.models:
            raise ApiError(400, f"a model named {body.lora_name!r} is served already", param="lora_name")
        await asyncio.to_thread(pool.add_adapter, body.lora_name, path)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload_adapter(body: UnloadAdapterBody):
        if not settings.adapter_dirs:
            allowed("")
        await asyncio.to_thread(pool.remove_adapter, body.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return HTMLResponse((Path(__file__).with_name("playground.html")).read_text(encoding="utf-8"))

    @app.get("/playground/examples")
    async def examples():
        return {"examples": settings.examples}

    return _BodyLimit(app, settings.max_body_bytes)
