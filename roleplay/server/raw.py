"""The model itself as an OpenAI model: ``roleplay serve`` as a plain model server.

Besides the characters (``roleplay/<id>``), the server lists the loaded model under its own
name (``SmolLM2-135M-Instruct`` by default). Chat completions for it pass the client's
messages straight to the backend — no card, retrieval, stage note or memory — which is what
vLLM's or llama.cpp's OpenAI server does. So one ``roleplay serve`` can be the model server
behind stateless front-ends (``ROLEPLAY_BACKEND=openai``; docs/concurrency.md), batching
their requests with the backend's scheduler; the scale-out test uses it in place of vLLM.

Like vLLM, a final assistant message is continued when ``continue_final_message`` is true
(our openai backend sends that for its stage-note prefill); a final assistant message
without it is refused, since a plain backend call always continues one.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from .schemas import (ChatCompletionRequest, chunk_body, completion_body, error_body, logprobs_body,
                      message_body, usage_body)

if TYPE_CHECKING:
    from ..engine import Engine
    from .bridge import StreamBridge


def raw_model_id(engine: "Engine") -> str:
    """The name the loaded model is served under (without loading it)."""
    from ..backends.gguf import DEFAULT_MODEL_NAME

    model = engine.settings.model
    return DEFAULT_MODEL_NAME if not model else Path(str(model)).name


def raw_messages(body: ChatCompletionRequest) -> list[dict]:
    """The client's messages as backend messages; ValueError when they cannot be sent as they are."""
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in body.messages if m.role != "tool"]
    if not messages:
        raise ValueError("messages: nothing to send (only tool messages)")
    if messages[-1]["role"] == "assistant" and body.continue_final_message is not True:
        raise ValueError("messages: a final assistant message is continued only with continue_final_message=true")
    return messages


def _items(generation: Any):
    """Text chunks, then the finished `Generation` itself (finish reason, counts, logprobs)."""
    for chunk in generation:
        yield chunk
    yield generation


async def complete(engine: "Engine", bridge: "StreamBridge", body: ChatCompletionRequest, params: Any, *,
                   cid: str) -> Any:
    """Answer a chat completion for the raw model (streamed or whole)."""
    from fastapi.responses import JSONResponse, StreamingResponse

    messages = raw_messages(body)
    priority = body.priority or 0  # vLLM's field: background work of a front-end waits for users
    out, cancel = bridge.submit(lambda: _items(engine.backend.stream(messages, params, priority=priority)))
    first = await out.get()
    if isinstance(first, Exception):
        cancel.set()
        raise first
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(first, out, cancel, cid, body.model, include_usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    text, item = [], first
    try:
        from .bridge import END

        while item is not END:
            if isinstance(item, Exception):
                raise item
            if isinstance(item, str):
                text.append(item)
            else:
                gen = item
            item = await out.get()
    finally:
        cancel.set()
    choice = {"message": message_body("".join(text)), "finish_reason": gen.finish_reason or "stop",
              "logprobs": logprobs_body(gen.logprobs)}
    usage = usage_body(gen.prompt_tokens or 0, gen.completion_tokens or 0)
    return JSONResponse(completion_body(cid, body.model, [choice], usage=usage))


async def _sse(first: Any, out: Any, cancel: Any, cid: str, model: str, include_usage: bool) -> AsyncIterator[str]:
    from .bridge import END

    created = int(time.time())

    def event(payload: dict) -> str:
        return "data: " + json.dumps(payload, ensure_ascii=False) + "\n\n"

    item = first
    try:
        yield event(chunk_body(cid, model, created, delta={"role": "assistant", "content": ""}))
        while item is not END:
            if isinstance(item, Exception):
                yield event(error_body(str(item), type="server_error"))
                break
            if isinstance(item, str):
                if item:
                    yield event(chunk_body(cid, model, created, delta={"content": item}))
            else:  # the finished generation
                yield event(chunk_body(cid, model, created, delta={}, finish_reason=item.finish_reason or "stop"))
                if include_usage:
                    final = chunk_body(cid, model, created, delta={},
                                       usage=usage_body(item.prompt_tokens or 0, item.completion_tokens or 0))
                    final["choices"] = []
                    yield event(final)
            item = await out.get()
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()
