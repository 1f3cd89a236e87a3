"""A fake OpenAI-compatible chat endpoint for tests of real servers, with fault injection.

The model name sets the behaviour (faults may be joined with `+`):
- `slow-<ms>-<words>`: streams `word0 word1 ... [1].` with a delay per word (other models:
  10 ms, 30 words);
- `fail500`: answers 500; `ratelimit-<s>`: answers 429 with `Retry-After: <s>`;
- `reset`: drops the connection before any text; `cut-<n>`: after n words;
- `stallfirst`: never sends a first token; `stallmid-<n>`: stalls after n words;
- `malformed-<n>`: sends a broken chunk after n words;
- `keepalive`: sends only SSE comments and empty deltas, never text;
- `window-<tokens>`: answers 400 `context_length_exceeded` when the prompt (UTF-8 bytes / 4,
  about what BPE tokenizers give on English) exceeds the window.
- `quote-<n>-<m>`: answers the first sentence of passage [n] of the prompt, cited [m] (0: no
  citation); `+invent` adds a sentence no passage holds, cited [m];
- `recall`: answers from "memory" (a boiling point), citing [1].
A trailing assistant message is a prefix to continue: the words it holds are not sent again.
`GET /calls` counts the requests per model (`?contains=X`: per prompt whose last user message
contains X); `DELETE /calls` resets the counts.
Run as `python -m tests.fake_llm PORT`.
"""

import asyncio
import json
import re
import sys
import time
from collections import Counter

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# Its answers ("word0 word1 ... [1].") are in no document: servers that test the stream itself
# (faults, failover, runs, timing) turn the grounding check off; test_grounding.py tests it.
STREAM_ONLY = {"KEEL_GROUNDING_CHECK": "false"}
CALLS: Counter[str] = Counter()
PROMPTS: Counter[str] = Counter()  # requests per last user message (per call site)


def _chunk(model: str, delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


INVENTED = "Keel also ingests spreadsheets, slide decks and audio recordings natively"
RECALLED = "Mercury boils at 356.7 degrees Celsius at sea level [1]."
_PASSAGE = re.compile(r"^\[(\d+)\] \(.*\)$", re.MULTILINE)


def _quoted(messages: list[dict], model: str) -> list[str]:
    """The words of a `quote-<n>-<m>` answer: passage n's first sentence, cited [m]."""
    n, m = (int(x) for x in model.split("+")[0].split("-")[1:3])
    users = [str(x.get("content", "")) for x in messages if x.get("role") == "user"]
    parts = _PASSAGE.split(users[-1].split("</passages>")[0]) if users else []
    texts = dict(zip(parts[1::2], parts[2::2], strict=True))
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(texts.get(str(n), "").split()))
    first = next((x for x in sentences if len(x.split()) >= 6 and x.endswith(".")), "Nothing.")
    cite = f" [{m}]" if m else ""
    answer = f"{first[:-1]}{cite}."
    if "invent" in model:
        answer += f" {INVENTED}{cite}."
    return answer.split()


def _faults(model: str) -> dict[str, int]:
    out = {}
    for part in model.split("+"):
        name, _, arg = part.partition("-")
        out[name] = int(arg.split("-")[0]) if arg and arg.split("-")[0].isdigit() else 0
    return out


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": code, "type": code, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


async def completions(request: Request) -> Response:
    body = await request.json()
    model = body.get("model", "slow-20-30")
    CALLS[model] += 1
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    PROMPTS[str(users[-1].get("content", "")) if users else ""] += 1
    faults = _faults(model)
    messages = body.get("messages", [])
    if "window" in faults:
        prompt_tokens = sum(len(str(m.get("content", "")).encode()) // 4 + 4 for m in messages)
        if prompt_tokens + int(body.get("max_tokens") or 0) > faults["window"]:
            return _error(400, "context_length_exceeded")
    if "fail500" in faults:
        return _error(500, "server_error")
    if "ratelimit" in faults:
        return _error(429, "rate_limited", {"Retry-After": str(faults["ratelimit"])})
    if "stallfirst" in faults:
        await asyncio.sleep(3600)
    slow = model.split("+")[0].split("-")
    delay_ms, words = (int(slow[1]), int(slow[2])) if slow[0] == "slow" else (10, 30)
    text = [f"word{n}" for n in range(words - 1)] + ["[1]."]
    if model.startswith("quote-"):
        text = _quoted(messages, model)
    elif model == "recall":
        text = RECALLED.split()
    prefix = messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else ""
    start = len(prefix.split())

    async def stream():
        yield _chunk(model, {"role": "assistant", "content": ""})
        if "keepalive" in faults:
            for _ in range(3600):
                await asyncio.sleep(0.2)
                yield ": keep-alive\n\n"
                yield _chunk(model, {"content": ""})
        if "reset" in faults:
            raise ConnectionResetError("fake reset")
        for n in range(start, len(text)):
            sent = n - start
            if sent == faults.get("cut", -1):
                raise ConnectionResetError("fake cut")
            if sent == faults.get("stallmid", -1):
                await asyncio.sleep(3600)
            if sent == faults.get("malformed", -1):
                yield 'data: {"choices": [{"delta": {"content": \n\n'
            await asyncio.sleep(delay_ms / 1000)
            yield _chunk(model, {"content": text[n] if n == 0 else " " + text[n]})
        yield _chunk(model, {}, finish="stop")
        usage = {"prompt_tokens": 100, "completion_tokens": len(text) - start}
        yield _chunk(model, {}, usage={**usage, "total_tokens": 100 + len(text) - start})
        yield "data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


async def calls(request: Request) -> JSONResponse:
    if request.method == "DELETE":
        CALLS.clear()
        PROMPTS.clear()
    contains = request.query_params.get("contains")
    if contains is not None:  # the request count of each prompt that contains the text
        return JSONResponse([n for prompt, n in PROMPTS.items() if contains in prompt])
    return JSONResponse(dict(CALLS))


app = Starlette(
    routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/calls", calls, methods=["GET", "DELETE"]),
    ]
)

if __name__ == "__main__":
    # Stalled streams must not hold the shutdown.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="critical",
        timeout_graceful_shutdown=1,
    )
