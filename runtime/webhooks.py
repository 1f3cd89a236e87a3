"""Run webhooks (Agent Server API): when a run that named a URL ends, the replica that ran it
POSTs the run there, as the reference server does (the run body, its values or error, times).

A delivery never changes the run's outcome and never holds up the next run: it goes out after
the outcome is committed, with a timeout and one retry on a 5xx answer or a connection error."""

import asyncio
import ipaddress
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from graph.errors import InvalidInput
from runtime.agent_runs import iso

log = logging.getLogger("keel.webhooks")
RETRY_AFTER_S = 0.5


def check_url(url: str, allow_private: bool) -> str:
    """`url` when keel may post to it: http(s) with a host; unless `allow_private`, not a
    loopback, private or link-local address (literal IPs and `localhost`), so a client cannot
    make the server call into its own network. Else `InvalidInput` (422)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("webhook must be an http(s) URL with a host")
    if allow_private:
        return url
    host = parts.hostname.lower()
    try:
        address = ipaddress.ip_address(host)
        internal = any(
            (address.is_private, address.is_loopback, address.is_link_local, address.is_unspecified)
        )
    except ValueError:
        internal = host == "localhost" or host.endswith(".localhost")
    if internal:
        raise InvalidInput("webhook must not point at a loopback or private address")
    return url


def payload(
    body: dict[str, Any],
    started_at: float,
    values: dict[str, Any] | None,
    error: dict[str, Any] | None,
) -> dict[str, Any]:
    """What a webhook receives: the run's body with its timing and values (or error)."""
    sent: dict[str, Any] = {
        **body,
        "run_started_at": iso(started_at),
        "run_ended_at": body["updated_at"],
        "webhook_sent_at": iso(time.time()),
        "values": values,
    }
    if error is not None:
        sent["error"] = error
    return sent


async def deliver(url: str, sent: dict[str, Any], timeout_s: float) -> int | None:
    """POSTs `sent` to `url`, retrying once on a 5xx answer or a transport error; returns the
    last status code (None: no answer). Failures are logged, never raised."""
    status: int | None = None
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        for attempt in (1, 2):
            try:
                status = (await client.post(url, json=sent)).status_code
            except httpx.HTTPError as exc:
                status = None
                log.warning("webhook attempt %d failed: %s", attempt, type(exc).__name__)
            if status is not None and status < 500:
                break
            if attempt == 1:
                await asyncio.sleep(RETRY_AFTER_S)
    if status is None or status >= 400:
        log.warning("webhook not delivered", extra={"status": status, "run_id": sent["run_id"]})
    return status
