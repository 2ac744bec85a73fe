"""The OpenAI-compatible API: ``/v1/models`` and ``/v1/chat/completions`` over the Engine.

Every character card is a model (``roleplay/<id>``). A completion runs the client's
conversation through `Engine.stream` — retrieval, lorebook, stage note, memory — so
any OpenAI client (the SDK, SillyTavern, Open WebUI) talks to our characters. The server
holds no engine logic: it maps the request onto the engine's arguments and the reply back.

Trade-offs:
- The backend owns concurrency: each request runs its turn on a thread of its own and
  submits to the backend, which batches concurrent requests (continuous batching,
  llama.cpp slots, vLLM) and queues the rest; a full wait line is a 429 with
  ``Retry-After``. Each request has its own history, card copy and output channel, so
  concurrent conversations never mix.
- Stateless, like OpenAI: the client sends the whole conversation each time; nothing is
  written to the sessions database. Memories are read (for ``user``), never written.
- A client that disconnects mid-stream cancels its generation at the next chunk, so an
  abandoned request stops costing model time.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from contextlib import asynccontextmanager
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable

from fastapi import FastAPI, Request  # light (starlette + pydantic); annotations need them at module level

from ..errors import BackendError, CardError, RoleplayError
from .schemas import (ChatCompletionRequest, chunk_body, completion_body, error_body, model_entry,
                      new_completion_id)

if TYPE_CHECKING:
    from ..engine import Engine, Turn

#: Default request body limit: long SillyTavern contexts fit; a runaway upload does not.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

_END = object()


class APIError(Exception):
    """An error answered in OpenAI's format with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}


class StreamBridge:
    """Runs each request's turn on a thread of its own and hands its items to asyncio.

    ``submit`` returns an asyncio queue that receives the engine's items (text chunks, the
    final Reply, or an exception) and then an end marker. Setting the returned event
    cancels the turn at its next chunk (the backend then frees the request's slot). No
    lock and no single worker: the backend decides how concurrent turns share the model.
    """

    def __init__(self, *, max_threads: int = 256) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="roleplay-turn")
        self._lock = threading.Lock()
        self._cancels: set[threading.Event] = set()

    def submit(self, make_stream: Callable[[], Iterable[Any]]) -> tuple[asyncio.Queue, threading.Event]:
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(out.put_nowait, item)
            except RuntimeError:  # the event loop closed (server shutting down)
                cancel.set()

        def job() -> None:
            stream = None
            try:
                if not cancel.is_set():
                    stream = iter(make_stream())
                    for item in stream:
                        emit(item)
                        if cancel.is_set():
                            break
            except Exception as exc:  # reported to this request only
                emit(exc)
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # stops the backend's generation early
                with self._lock:
                    self._cancels.discard(cancel)
                emit(_END)

        with self._lock:
            self._cancels.add(cancel)
        self._pool.submit(job)
        return out, cancel

    def shutdown(self) -> None:
        """Cancel every running turn; do not wait for them."""
        with self._lock:
            for cancel in self._cancels:
                cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


class BodyLimitMiddleware:
    """Answers 413 (OpenAI format) when a request body exceeds ``max_bytes``.

    Checks ``Content-Length`` up front; a streamed (chunked) body is read into memory up to
    the limit before the app sees it (bodies here are small JSON), then replayed.
    """

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                return await self._reject(send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await self._reject(send)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # later calls wait for http.disconnect

        await self.app(scope, replay, send)

    async def _reject(self, send: Callable) -> None:
        body = json.dumps(error_body(f"request body larger than {self.max_bytes} bytes",
                                     code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(engine: "Engine", *, api_keys: Iterable[str] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> "FastAPI":
    """Build the FastAPI app serving ``engine``.

    Args:
        engine: the engine whose settings, cards and backend are served.
        api_keys: accepted ``Authorization: Bearer`` keys; None or empty means no key is
            required (only safe on loopback — ``roleplay serve`` enforces that).
        max_body_bytes: larger request bodies get a 413.

    >>> app = create_app(Engine())  # doctest: +SKIP
    """
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    keys = [k for k in (api_keys or []) if k]

    queue = StreamBridge()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        queue.shutdown()  # drop queued jobs; a running generation stops at its next chunk

    app = FastAPI(title="roleplay", description="OpenAI-compatible role-play API", version="1",
                  docs_url=None, redoc_url=None, openapi_url="/v1/openapi.json", lifespan=lifespan)
    app.state.engine = engine
    app.state.queue = queue
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)

    @app.exception_handler(APIError)
    async def _api_error(_req: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, type=exc.type, param=exc.param, code=exc.code),
                            status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        msg = err.get("msg", "invalid request")
        if not param and err.get("type") != "missing":
            msg = "the request body must be a JSON object (an OpenAI chat completion request)"
        return JSONResponse(error_body(f"{param}: {msg}" if param else msg, param=param,
                                       code="invalid_value"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), code=code), status_code=exc.status_code)

    @app.exception_handler(RoleplayError)
    async def _roleplay(_req: Request, exc: RoleplayError) -> JSONResponse:
        status = 503 if isinstance(exc, BackendError) else 500
        return JSONResponse(error_body(str(exc), type="server_error"), status_code=status)

    def check_key(request: Request) -> None:
        if not keys:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")
        if not any(hmac.compare_digest(token.strip().encode(), k.encode()) for k in keys):
            raise APIError(401, "incorrect API key provided", code="invalid_api_key")

    @app.get("/health")
    def health() -> dict:
        s = engine.settings
        backend = engine._backend  # not loaded by a health check
        waiting = getattr(getattr(backend, "scheduler", None), "waiting", 0) if backend is not None else 0
        return {"status": "ok", "backend": s.backend, "model": s.model, "waiting": waiting}

    @app.get("/v1/models")
    def models(request: Request) -> dict:
        check_key(request)
        from ..cards import list_cards

        cards, _errors = list_cards(engine.settings)
        return {"object": "list", "data": [model_entry(c.id, name=c.name, tags=c.tags) for c in cards]}

    @app.get("/v1/models/{model_id:path}")
    def model(model_id: str, request: Request) -> dict:
        check_key(request)
        card = _load_card(engine, model_id)
        return model_entry(card.id, name=card.name, tags=card.tags)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        check_key(request)
        card = await asyncio.to_thread(_load_card, engine, body.model)
        turn = _turn_arguments(card, body)
        params = _sampling_params(body)
        out, cancel = queue.submit(lambda: engine.stream(turn, params))
        first = await out.get()  # a busy backend answers 429 before any response starts
        if isinstance(first, Exception):
            cancel.set()
            raise _as_api_error(first)
        out = _Items(first, out)
        cid, model_name = new_completion_id(), body.model
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(out, cancel, cid, model_name, params.max_tokens, include_usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            reply = await _collect(out)
        finally:
            cancel.set()
        return completion_body(cid, model_name, reply.text,
                               finish_reason=reply.finish_reason,
                               prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                               extra=_reply_extra(reply))

    return app


def _load_card(engine: "Engine", model: str):
    """The card named by an API model id; unknown ids are 404 ``model_not_found``."""
    from ..cards.library import list_card_paths

    card_id = model[len("roleplay/"):] if model.startswith("roleplay/") else model
    if card_id not in list_card_paths(engine.settings):
        raise APIError(404, f"the model {model!r} does not exist; GET /v1/models lists them "
                            "(characters, as roleplay/<id>)", param="model", code="model_not_found")
    try:
        return engine.card(card_id)
    except CardError as exc:
        raise APIError(500, f"the character card for {model!r} cannot be loaded: {exc}",
                       type="server_error", param="model") from None


def _turn_arguments(card: Any, body: ChatCompletionRequest) -> "Turn":
    """Split the client's messages into (extra instructions, history, new message).

    System/developer messages are appended to the card's system prompt (as extra persona
    and instructions); the last user message is the new message; earlier user/assistant
    turns are the history. Assistant messages after the last user message are ignored.
    ``user`` selects whose memories are read (none without it: an anonymous client must
    not see what another one told the character).
    """
    from ..cards.macros import expand
    from ..engine import Turn

    msgs = body.messages
    last_user = max(i for i, m in enumerate(msgs) if m.role == "user")
    user_name = msgs[last_user].name or card.user_name
    extra = [m.text() for m in msgs if m.role in ("system", "developer") and m.text().strip()]
    if extra:
        joined = "\n\n".join(expand(t, char=card.name, user=user_name) for t in extra)
        card = card.model_copy(update={"system_prompt": (card.system_prompt + "\n\n" + joined).strip()})
    history = []
    for m in msgs[:last_user]:
        if m.role == "user":
            history.append({"role": "user", "name": m.name or user_name, "content": m.text()})
        elif m.role == "assistant":
            history.append({"role": "assistant", "name": card.name, "content": m.text()})
    text = msgs[last_user].text()
    if not text.strip():
        raise APIError(400, "the last user message is empty", param="messages")
    return Turn(card=card, history=history, user_text=text, user_name=user_name, memory_user=body.user or None)


def _sampling_params(body: ChatCompletionRequest):
    from ..backends.base import SamplingParams
    from ..errors import ConfigError

    try:
        return SamplingParams(**body.sampling())
    except ConfigError as exc:  # the request fields passed our schema but not the engine's
        raise APIError(400, str(exc), code="invalid_value") from None


class _Items:
    """The request's queue with its first item (already taken to check for a 429) put back."""

    def __init__(self, first: Any, out: asyncio.Queue) -> None:
        self.first, self.out, self.taken = first, out, False

    async def get(self) -> Any:
        if not self.taken:
            self.taken = True
            return self.first
        return await self.out.get()


async def _collect(out: "_Items"):
    reply = None
    while True:
        item = await out.get()
        if item is _END:
            break
        if isinstance(item, Exception):
            raise _as_api_error(item)
        if not isinstance(item, str):
            reply = item
    if reply is None:
        raise APIError(500, "the generation ended without a reply", type="server_error")
    return reply


async def _sse(out: "_Items", cancel: threading.Event, cid: str, model: str, max_tokens: int,
               include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: role chunk, content chunks, a finish chunk, ``[DONE]``."""
    created = int(time.time())

    def event(payload: dict) -> str:
        return "data: " + json.dumps(payload, ensure_ascii=False) + "\n\n"

    try:
        yield event(chunk_body(cid, model, created, delta={"role": "assistant", "content": ""}))
        while True:
            item = await out.get()
            if item is _END:
                break
            if isinstance(item, Exception):
                err = _as_api_error(item)
                yield event(error_body(err.message, type=err.type, code=err.code))
                break
            if isinstance(item, str):
                if item:
                    yield event(chunk_body(cid, model, created, delta={"content": item}))
                continue
            reply = item
            usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                     "total_tokens": reply.prompt_tokens + reply.completion_tokens}
            yield event(chunk_body(cid, model, created, delta={},
                                   finish_reason=reply.finish_reason,
                                   extra=_reply_extra(reply)))
            if include_usage:
                final = chunk_body(cid, model, created, delta={}, usage=usage)
                final["choices"] = []
                yield event(final)
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()  # a disconnected client stops its generation at the next chunk


def _as_api_error(exc: Exception) -> APIError:
    from ..backends.base import BackendBusy

    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, BackendBusy):
        return APIError(429, str(exc), type="rate_limit_exceeded", code="rate_limit_exceeded",
                        headers={"Retry-After": str(max(1, round(exc.retry_after)))})
    if isinstance(exc, RoleplayError):
        return APIError(503 if isinstance(exc, BackendError) else 500, str(exc), type="server_error")
    return APIError(500, f"generation failed: {type(exc).__name__}: {exc}", type="server_error")


def _reply_extra(reply: Any) -> dict:
    """Role-play details OpenAI clients ignore but ours can show (emotion, stage note …)."""
    record = reply.record()
    record.pop("text")  # it is the message content
    return record
