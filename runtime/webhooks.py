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
    make the server call into its own network. Else `InvalidInput` (422). `deliver` checks
    again what the host name resolves to."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("webhook must be an http(s) URL with a host")
    host = parts.hostname.lower()
    named_local = host == "localhost" or host.endswith(".localhost")
    if not allow_private and (named_local or _internal(host)):
        raise InvalidInput("webhook must not point at a loopback or private address")
    return url


def _internal(address: str) -> bool:
    """Whether `address` is a loopback, private, link-local or unspecified IP (False: a name)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified


async def _resolves_internal(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    found = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port)
    return any(_internal(str(info[4][0])) for info in found)


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


async def deliver(
    url: str, sent: dict[str, Any], timeout_s: float, allow_private: bool
) -> int | None:
    """POSTs `sent` to `url`, retrying once on a 5xx answer or a transport error; returns the
    last status code (None: no answer). Failures are logged, never raised. Unless
    `allow_private`, a host name that resolves to an internal address gets nothing."""
    status: int | None = None
    if not allow_private:
        try:
            internal = await _resolves_internal(url)
        except OSError:
            internal = False  # unresolvable: the post fails, and is logged, below
        if internal:
            log.warning("webhook host resolves to an internal address: not posted")
            return None
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
