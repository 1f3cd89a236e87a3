"""A fake OpenAI-compatible chat endpoint for tests of real servers: streams a fixed answer
word by word with a delay, so runs last long enough to disconnect, cancel or crash them.

The model name sets the behaviour: `slow-<ms>-<words>` (delay per word, answer length).
`GET /calls?contains=TEXT` counts the calls per distinct last message containing TEXT, so a test
can prove no node asked the model twice. Run as `python -m tests.fake_llm PORT`.
"""

import asyncio
import json
import sys
import time
from collections import Counter

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


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


CALLS: Counter[str] = Counter()


async def completions(request: Request) -> StreamingResponse | JSONResponse:
    body = await request.json()
    if body.get("messages"):
        CALLS[str(body["messages"][-1].get("content", ""))] += 1
    model = body.get("model", "slow-20-30")
    _, delay_ms, words = model.split("-")
    text = [f"word{n}" for n in range(int(words) - 1)] + ["[1]."]

    async def stream():
        yield _chunk(model, {"role": "assistant", "content": ""})
        for n, word in enumerate(text):
            await asyncio.sleep(int(delay_ms) / 1000)
            yield _chunk(model, {"content": word if n == 0 else " " + word})
        yield _chunk(model, {}, finish="stop")
        yield _chunk(
            model,
            {},
            usage={
                "prompt_tokens": 100,
                "completion_tokens": len(text),
                "total_tokens": 100 + len(text),
            },
        )
        yield "data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


async def calls(request: Request) -> JSONResponse:
    text = request.query_params.get("contains", "")
    return JSONResponse([n for message, n in CALLS.items() if text in message])


app = Starlette(
    routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/calls", calls, methods=["GET"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
