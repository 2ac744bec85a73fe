"""The OpenAI-compatible API: models, chat and text completions over the Engine.

Every character card is a model (``roleplay/<id>``), and ``roleplay/custom`` plays the
client's own character. A completion runs the client's conversation through
`Engine.stream` — retrieval, lorebook, stage note, memory — so any OpenAI client (the SDK,
SillyTavern, Open WebUI) talks to our characters. The server holds no engine logic:
`roleplay.server.turns` maps a request onto a `Turn` (continue, impersonate, empty send,
personas, names) and this module maps the replies back to OpenAI's wire format.

Trade-offs:
- The backend owns concurrency: each request (each of its ``n`` choices) runs its turn on
  a thread of its own and submits to the backend, which batches concurrent requests
  (continuous batching, llama.cpp slots, vLLM) and queues the rest; a full wait line is a
  429 with ``Retry-After``. Each request has its own history, card copy and output
  channel, so concurrent conversations never mix.
- Stateless, like OpenAI: the client sends the whole conversation each time; nothing is
  written to the sessions database. Memories are read (for ``user``), never written.
- ``max_tokens`` larger than the context allows is lowered, not refused (servers such as
  vLLM refuse; SillyTavern users set large values and expect a reply): the response says
  so in ``usage.max_tokens_clamped_to`` and the ``X-Roleplay-Max-Tokens`` header. The
  engine counts the room on the exact prompt ids of the turn it composes (once per
  choice; no second composition for an estimate) and reports what it used.
- Log-probabilities in a stream arrive whole in the chunk that carries ``finish_reason``
  (the engine's post-processing works on text, not tokens).
- A client that disconnects mid-stream cancels its generation at the next chunk.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable

from fastapi import FastAPI, Request  # light (starlette + pydantic); annotations need them at module level

from ..errors import BackendError, CardError, ConfigError, ContextOverflow, RoleplayError
from .bridge import END, Items, StreamBridge, merged
from .middleware import AccessLogMiddleware, BodyLimitMiddleware, show_access_log
from .reasoning import ThinkSplitter, split_think
from .schemas import (CUSTOM_MODEL, ChatCompletionRequest, CompletionRequest, SamplingFields, chunk_body,
                      completion_body, error_body, logprobs_body, message_body, model_entry,
                      new_request_id, text_completion_body, text_logprobs_body, usage_body)
from .raw import complete as raw_complete, raw_model_id
from .turns import DEFAULT_MAX_TOKENS, MAX_TOKENS_CEILING, build_turn, dropped_context

if TYPE_CHECKING:
    from ..engine import Engine, Turn

#: Default request body limit: long SillyTavern contexts fit; a runaway upload does not.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class APIError(Exception):
    """An error answered in OpenAI's format with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}


def create_app(engine: "Engine", *, api_keys: Iterable[str] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, access_log: bool = True) -> "FastAPI":
    """Build the FastAPI app serving ``engine``.

    Args:
        engine: the engine whose settings, cards and backend are served.
        api_keys: accepted ``Authorization: Bearer`` keys; None or empty means no key is
            required (only safe on loopback — ``roleplay serve`` enforces that).
        max_body_bytes: larger request bodies get a 413.
        access_log: print one line per request (id, method, path, status, duration) on stderr.

    >>> app = create_app(Engine())  # doctest: +SKIP
    """
    from fastapi.responses import JSONResponse, StreamingResponse

    keys = [k for k in (api_keys or []) if k]
    queue = StreamBridge()
    if access_log:
        show_access_log()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        queue.shutdown()  # drop queued jobs; a running generation stops at its next chunk

    app = FastAPI(title="roleplay", description="OpenAI-compatible role-play API", version="1",
                  docs_url=None, redoc_url=None, openapi_url="/v1/openapi.json", lifespan=lifespan)
    app.state.engine = engine
    app.state.queue = queue
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(AccessLogMiddleware)  # outermost: logs 413s too

    _handle_errors(app)

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

    def context_length() -> int | None:
        backend = engine._backend  # not loaded by a model listing
        return getattr(backend, "context_length", None) if backend is not None else None

    @app.get("/health")
    def health() -> dict:
        s = engine.settings
        backend = engine._backend  # not loaded by a health check
        scheduler = getattr(backend, "scheduler", None) if backend is not None else None
        from ..backends.registry import pick_backend

        out = {"status": "ok", "backend": pick_backend(s), "model": s.model,
               "waiting": scheduler.waiting if scheduler is not None else 0}
        # the batching and prompt-cache figures benchmarks report (docs/concurrency.md)
        stats = scheduler.stats if scheduler is not None else getattr(backend, "stats", None)
        if stats is not None:
            out["scheduler"] = dict(stats)
        return out

    @app.get("/v1/models")
    def models(request: Request) -> dict:
        check_key(request)
        from ..cards import list_cards

        cards, _errors = list_cards(engine.settings)
        ctx = context_length()
        data = [model_entry(c.id, name=c.name, tags=c.tags, context_length=ctx) for c in cards
                if c.id != CUSTOM_MODEL]
        data.append(_custom_entry(ctx))
        data.append({"id": raw_model_id(engine), "object": "model", "created": 0, "owned_by": "roleplay",
                     "name": "the model itself (no character)", "tags": ["raw"]})
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model_id:path}")
    def model(model_id: str, request: Request) -> dict:
        check_key(request)
        card = _load_card(engine, model_id)
        if card is None:
            return _custom_entry(context_length())
        return model_entry(card.id, name=card.name, tags=card.tags, context_length=context_length())

    async def start(body: SamplingFields, turn: "Turn") -> tuple[list[Items], list[Any], Any]:
        """Submit the request's ``n`` turns; returns their queues, cancels and the ``max_tokens``
        used when it is lower than the request's (else None)."""
        params = await asyncio.to_thread(lambda: _sampling_params(engine, body=body))
        per_choice = [params if params.seed is None else params.model_copy(update={"seed": params.seed + i})
                      for i in range(body.n)]
        used: list[Any] = []  # what the engine really sent (max_tokens fitted to the context)
        queues, cancels = [], []
        for i, p in enumerate(per_choice):
            # the first choice's reply feeds the user's memory (once per request)
            out, cancel = queue.submit(lambda p=p, i=i: _remembering(engine, turn, engine.stream(
                turn, p, on_params=used.append)) if i == 0 else engine.stream(turn, p))
            queues.append(out)
            cancels.append(cancel)
        items = []
        for i, out in enumerate(queues):
            first = await out.get()  # a busy backend answers 429 before any response starts
            if isinstance(first, Exception):
                for c in cancels:
                    c.set()
                raise _as_api_error(first)
            items.append(Items(first, out))
        # subtle: the first choice called on_params before queueing its first item
        fitted = used[0].max_tokens if used else params.max_tokens
        wanted = body.requested_max_tokens() or DEFAULT_MAX_TOKENS
        return items, cancels, (fitted if fitted < wanted else None)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        check_key(request)
        if body.model == raw_model_id(engine):  # the plain model, no character (roleplay.server.raw)
            from ..backends.base import SamplingParams

            try:
                params = SamplingParams(**body.sampling(), max_tokens=body.requested_max_tokens() or DEFAULT_MAX_TOKENS)
                return await raw_complete(engine, queue, body, params, cid=_request_id(request))
            except (ValueError, ConfigError) as exc:
                raise APIError(400, str(exc).splitlines()[0], param="messages", code="invalid_value") from None
            except Exception as exc:
                raise _as_api_error(exc) from None
        card = await asyncio.to_thread(_load_card, engine, body.model)
        try:
            turn = build_turn(body, card=card, client_user=_header(request, "x-openwebui-user-id"),
                              client_name=_header(request, "x-openwebui-user-name"))
        except ValueError as exc:  # RequestShapeError, or a custom card that does not validate
            raise APIError(400, str(exc).splitlines()[0], param=getattr(exc, "param", "messages"),
                           code="invalid_value") from None
        headers = {}
        if card is not None and (dropped := dropped_context(body)):
            headers["X-Roleplay-Dropped-Messages"] = str(dropped)
        items, cancels, clamp = await start(body, turn)
        if clamp is not None:
            headers["X-Roleplay-Max-Tokens"] = str(clamp)
        cid = _request_id(request)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            return StreamingResponse(_sse(items, cancels=cancels, cid=cid, model=body.model, turn=turn,
                                          include_usage=include_usage, clamp=clamp),
                                     media_type="text/event-stream", headers=headers)
        return JSONResponse(_chat_body(await _collect_all(items, cancels), cid=cid, model=body.model, turn=turn,
                                       clamp=clamp), headers=headers)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        """Text completion for clients that only speak it: the prompt is the user's message."""
        check_key(request)
        from ..engine import Turn

        card = await asyncio.to_thread(_load_card, engine, body.model)
        if card is None:
            raise APIError(400, f"{body.model} needs the client's chat messages; use /v1/chat/completions",
                           param="model", code="invalid_value")
        turn = Turn(card=card, user_text=body.prompt_text(), memory_user=body.user or None)
        items, cancels, clamp = await start(body, turn)
        cid = _request_id(request)
        if body.stream:
            echo = body.prompt_text() if body.echo else ""
            return StreamingResponse(_sse_text(items, cancels=cancels, cid=cid, model=body.model, echo=echo),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        replies = [reply for _chunks, reply in await _collect_all(items, cancels)]
        choices = [{"text": (body.prompt_text() if body.echo else "") + split_think(r.text)[0],
                    "finish_reason": r.finish_reason, "logprobs": text_logprobs_body(r.logprobs)} for r in replies]
        usage = usage_body(replies[0].prompt_tokens, sum(r.completion_tokens for r in replies), clamped_to=clamp)
        return text_completion_body(cid, body.model, choices, usage=usage)

    return app


def _handle_errors(app: "FastAPI") -> None:
    """Every error leaves in OpenAI's error format, with the status a client expects."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(APIError)
    async def _api_error(_req: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, type=exc.type, param=exc.param, code=exc.code),
                            status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        msg = str(err.get("msg", "invalid request")).removeprefix("Value error, ")
        if not param and err.get("type") != "missing":
            msg = "the request body must be a JSON object (an OpenAI completion request)"
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


async def _collect_all(items: list[Items], cancels: list[Any]) -> list[tuple[list[str], Any]]:
    """Every choice's chunks and reply; all generations stop if one fails or the client leaves."""
    try:
        return await asyncio.gather(*(_collect(it) for it in items))
    finally:
        for c in cancels:
            c.set()


def _chat_body(results: list[tuple[list[str], Any]], *, cid: str, model: str, turn: "Turn",
               clamp: int | None) -> dict:
    """A non-streamed chat completion from its choices' chunks and replies."""
    choices, replies = [], []
    for chunks, reply in results:
        content, reasoning = split_think("".join(chunks) if turn.mode == "continue" else reply.text)
        choices.append({"message": message_body(content, reasoning=reasoning), "finish_reason": reply.finish_reason,
                        "logprobs": logprobs_body(reply.logprobs)})
        replies.append(reply)
    usage = usage_body(replies[0].prompt_tokens, sum(r.completion_tokens for r in replies), clamped_to=clamp)
    out = completion_body(cid, model, choices, usage=usage, extra=_reply_extra(replies[0], turn))
    if len(replies) > 1:
        for choice, reply in zip(out["choices"], replies):
            choice["roleplay"] = _reply_extra(reply, turn)
    return out


def _remembering(engine: "Engine", turn: "Turn", stream: Any) -> Any:
    """``stream``'s items; once its reply is complete, the turn's memory work is handed to the
    background worker (facts the ``user`` told; nothing for anonymous requests)."""
    for item in stream:
        yield item
        if not isinstance(item, (str, Exception)) and hasattr(item, "record"):
            engine.remember(turn, item, source="api", llm=engine.settings.memory_llm)


def _custom_entry(context_length: int | None) -> dict:
    return model_entry(CUSTOM_MODEL, name="Your own character (the client's system prompt)",
                       tags=["custom"], context_length=context_length)


def _header(request: Request, name: str) -> str | None:
    """A short, printable header value (percent-decoded), else None."""
    from urllib.parse import unquote

    value = unquote(request.headers.get(name, "")).strip()
    return value[:256] if value and value.isprintable() else None


def _request_id(request: Request) -> str:
    state = request.scope.get("state") or {}
    return str(state.get("request_id") or new_request_id())


def _load_card(engine: "Engine", model: str):
    """The card named by an API model id (None for ``roleplay/custom``); unknown ids are 404."""
    from ..cards.library import list_card_paths

    card_id = model[len("roleplay/"):] if model.startswith("roleplay/") else model
    if card_id == CUSTOM_MODEL:
        return None
    if card_id not in list_card_paths(engine.settings):
        raise APIError(404, f"the model {model!r} does not exist; GET /v1/models lists them "
                            "(characters, as roleplay/<id>, and roleplay/custom)",
                       param="model", code="model_not_found")
    try:
        return engine.card(card_id)
    except CardError as exc:
        raise APIError(500, f"the character card for {model!r} cannot be loaded: {exc}",
                       type="server_error", param="model") from None


def _sampling_params(engine: "Engine", *, body: SamplingFields) -> Any:
    """The request's `SamplingParams`; ``max_tokens`` defaults to 200 and is capped at
    `MAX_TOKENS_CEILING`. The engine lowers it further to the room the prompt leaves in the
    model's context (`Engine.stream`'s ``on_params`` reports what it used)."""
    from ..backends.base import SamplingParams

    # subtle: the engine's retriever and director import their modules lazily; building them
    # here, under the engine's lock, keeps concurrent first turns (``n`` > 1, several
    # clients at start-up) from importing ``roleplay.store`` twice at once (a circular-import
    # race seen as "partially initialized module").
    engine.backend, engine.retriever, engine.director  # noqa: B018
    try:
        return SamplingParams(**body.sampling(), max_tokens=min(body.requested_max_tokens() or DEFAULT_MAX_TOKENS,
                                                                 MAX_TOKENS_CEILING))
    except ConfigError as exc:  # the request fields passed our schema but not the engine's
        field = str(exc).removeprefix("sampling parameter ").split(":")[0]
        raise APIError(400, str(exc), param=field or None, code="invalid_value") from None


async def _collect(out: Items) -> tuple[list[str], Any]:
    """All of one choice's text chunks and its final Reply."""
    reply, chunks = None, []
    while True:
        item = await out.get()
        if item is END:
            break
        if isinstance(item, Exception):
            raise _as_api_error(item)
        if isinstance(item, str):
            chunks.append(item)
        else:
            reply = item
    if reply is None:
        raise APIError(500, "the generation ended without a reply", type="server_error")
    return chunks, reply


async def _sse(items: list[Items], *, cancels: list[Any], cid: str, model: str, turn: "Turn",
               include_usage: bool, clamp: int | None) -> AsyncIterator[str]:
    """Server-sent events: a role chunk per choice, content chunks (``reasoning_content``
    for ``<think>`` text), a finish chunk per choice, the usage chunk if asked, ``[DONE]``."""
    created = int(time.time())
    splitters = [ThinkSplitter() for _ in items]
    replies: dict[int, Any] = {}

    def event(payload: dict) -> str:
        return "data: " + json.dumps(payload, ensure_ascii=False) + "\n\n"

    def delta(i: int, content: str, reasoning: str) -> str | None:
        d = {**({"reasoning_content": reasoning} if reasoning else {}), **({"content": content} if content else {})}
        return event(chunk_body(cid, model, created, index=i, delta=d)) if d else None

    try:
        for i in range(len(items)):
            yield event(chunk_body(cid, model, created, index=i, delta={"role": "assistant", "content": ""}))
        async for i, item in merged(items):
            if isinstance(item, Exception):
                err = _as_api_error(item)
                yield event(error_body(err.message, type=err.type, code=err.code))
                break
            if isinstance(item, str):
                if item and (out := delta(i, *splitters[i].feed(item))):
                    yield out
                continue
            if out := delta(i, *splitters[i].finish()):
                yield out
            replies[i] = item
            yield event(chunk_body(cid, model, created, index=i, delta={}, finish_reason=item.finish_reason,
                                   logprobs=logprobs_body(item.logprobs), extra=_reply_extra(item, turn)))
        if include_usage and replies:
            first = replies[min(replies)]
            final = chunk_body(cid, model, created, delta={}, usage=usage_body(
                first.prompt_tokens, sum(r.completion_tokens for r in replies.values()), clamped_to=clamp))
            final["choices"] = []
            yield event(final)
        yield "data: [DONE]\n\n"
    finally:
        for c in cancels:
            c.set()  # a disconnected client stops its generation at the next chunk


async def _sse_text(items: list[Items], *, cancels: list[Any], cid: str, model: str,
                    echo: str) -> AsyncIterator[str]:
    """Server-sent events of a text completion: text pieces (``<think>`` text left out), a
    finish piece per choice, ``[DONE]``."""
    created = int(time.time())
    splitters = [ThinkSplitter() for _ in items]

    def event(i: int, text: str, finish_reason: str | None = None) -> str:
        body = text_completion_body(cid, model, [{"text": text, "finish_reason": finish_reason,
                                                  "logprobs": None}], usage=None)
        body.pop("usage")
        body["created"], body["choices"][0]["index"] = created, i
        return "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"

    try:
        if echo:
            for i in range(len(items)):
                yield event(i, echo)
        async for i, item in merged(items):
            if isinstance(item, Exception):
                err = _as_api_error(item)
                yield "data: " + json.dumps(error_body(err.message, type=err.type, code=err.code)) + "\n\n"
                break
            text = splitters[i].feed(item)[0] if isinstance(item, str) else splitters[i].finish()[0]
            if text:
                yield event(i, text)
            if not isinstance(item, str):
                yield event(i, "", item.finish_reason)
        yield "data: [DONE]\n\n"
    finally:
        for c in cancels:
            c.set()


def _as_api_error(exc: Exception) -> APIError:
    from ..backends.base import BackendBusy

    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, BackendBusy):
        return APIError(429, str(exc), type="rate_limit_exceeded", code="rate_limit_exceeded",
                        headers={"Retry-After": str(max(1, round(exc.retry_after)))})
    if isinstance(exc, ContextOverflow):
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, ConfigError):  # a request the engine refuses (too long a message …)
        return APIError(400, str(exc), code="invalid_value")
    if isinstance(exc, RoleplayError):
        return APIError(503 if isinstance(exc, BackendError) else 500, str(exc), type="server_error")
    return APIError(500, f"generation failed: {type(exc).__name__}: {exc}", type="server_error")


def _reply_extra(reply: Any, turn: "Turn") -> dict:
    """Role-play details OpenAI clients ignore but ours can show (emotion, stage note, mode …)."""
    record = reply.record()
    record.pop("text")  # it is the message content
    record["mode"] = turn.mode
    record["user_name"] = turn.user_name
    return record
