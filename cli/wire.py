"""A lean HTTP/1.1 client for the benchmarks' load: JSON in, JSON or Server-Sent Events out.

A benchmark's load generator shares the machine's cores with the server it measures. Through
httpx and httpx-sse a turn (create a thread, stream a run) cost the client 4.4-4.9 ms of CPU
(this client: 1.3 ms), which both adds to every sequential turn it times and takes CPU from the
server under load. `Wire` keeps one keep-alive connection, writes each request as bytes and reads a stream as
lines, and does nothing else; the benchmarks report its CPU beside the server's.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse


class Wire:
    """One keep-alive connection to the server at `url` (`http://host:port`), opened on first
    use; one request at a time."""

    def __init__(self, url: str):
        address = urlparse(url)
        self.host, self.port = address.hostname or "127.0.0.1", address.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _request(self, path: str, body: dict[str, Any]) -> dict[bytes, bytes]:
        """Sends a JSON POST; reads the status line and headers of its answer. A kept-alive
        connection the server has closed meanwhile (idle timeout) is opened again once."""
        payload = json.dumps(body).encode()
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        status = b""
        for fresh in (self._writer is None, True):
            if fresh:
                await self.aclose()
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None and self._writer is not None
            self._writer.write(request)
            with contextlib.suppress(ConnectionError):
                status = await self._reader.readline()
            if status or fresh:
                break
        headers, reader = {}, self._reader
        assert reader is not None
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if status.split(b" ", 2)[1:2] not in ([b"200"], [b"201"]):
            raise RuntimeError(f"POST {path}: {status.decode(errors='replace').strip()}")
        return headers

    async def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POSTs `body`; the JSON answer (a sized body)."""
        headers = await self._request(path, body)
        assert self._reader is not None
        return json.loads(await self._reader.readexactly(int(headers[b"content-length"])))

    async def events(self, path: str, body: dict[str, Any]) -> AsyncIterator[tuple[str, str]]:
        """POSTs `body` and yields the (event, data) of each event of the chunked SSE answer,
        as each arrives, to the stream's end (comments, such as keep-alive pings, skipped).
        Read it to the end: the connection serves the next request only then."""
        headers = await self._request(path, body)
        assert headers.get(b"transfer-encoding") == b"chunked", headers
        reader, pending = self._reader, b""
        assert reader is not None
        while size := int((await reader.readline()).strip(), 16):
            pending += (await reader.readexactly(size + 2))[:-2]  # less the chunk's CRLF
            *blocks, pending = pending.replace(b"\r\n", b"\n").split(b"\n\n")
            for block in blocks:
                name, data = "message", []
                for line in block.decode().split("\n"):
                    field, _, value = line.partition(":")
                    if field == "event":
                        name = value.strip()
                    elif field == "data":
                        data.append(value.removeprefix(" "))
                if data or name != "message":
                    yield name, "\n".join(data)
        await reader.readline()  # the CRLF after the last (empty) chunk

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None
