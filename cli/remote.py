"""The CLI's HTTP client for a running keel server: waits while it starts, sends the API key,
and turns error envelopes into keel errors."""

import time

import httpx

from graph.errors import KeelError, StoreUnavailable

# How long a command waits for a server that holds the data dir but does not answer yet
# (it may be loading its models); a URL given on the command line gets a short grace only.
STARTUP_WAIT_S, GIVEN_URL_WAIT_S = 60.0, 3.0


def connect(url: str, api_key: str | None, wait_s: float = STARTUP_WAIT_S) -> httpx.Client:
    """A client for the server at `url`, once its `/health` answers (within `wait_s`)."""
    headers = {"X-API-Key": api_key} if api_key else {}
    client = httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(10, read=600))
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.get("/health").raise_for_status()
            return client
        except httpx.HTTPError as exc:
            if time.monotonic() > deadline:
                client.close()
                raise StoreUnavailable(f"no keel server answers at {url}: {exc}") from exc
            time.sleep(0.5)


def checked(response: httpx.Response) -> httpx.Response:
    """The response, or a `KeelError` with the server's status, code and message."""
    if response.is_success:
        return response
    try:
        error = response.json()["error"]
        detail = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        detail = response.text[:500]
    raise KeelError(f"{response.request.url} answered {response.status_code} ({detail})")
