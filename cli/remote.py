"""The CLI's HTTP client for a running keel server: finds it, waits while it starts, sends the
API key, and turns error envelopes into keel errors."""

import sys
import time

import httpx

from cli.datadir import DataDirLock, server_or_lock
from graph.errors import InvalidInput, KeelError, StoreUnavailable
from graph.settings import Settings

# How long a command waits for a server that holds the data dir but does not answer yet
# (it may be loading its models); a URL given on the command line gets a short grace only.
STARTUP_WAIT_S, GIVEN_URL_WAIT_S = 60.0, 3.0
# The error of an upload in which no file could be ingested (`api.errors.NothingIngested`):
# its code, and how its message starts before naming each file and its reason.
NOTHING_INGESTED, NOTHING_PREFIX = "nothing_ingested", "nothing in the upload could be ingested: "


class ServerError(KeelError):
    """A keel server answered with an error envelope: its status, code and message."""

    def __init__(self, url: str, status: int, code: str, message: str):
        super().__init__(f"{url} answered {status} ({code}: {message})")
        self.status, self.code, self.message = status, code, message


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
    """The response, or a `ServerError` with the server's status, code and message."""
    if response.is_success:
        return response
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:500]
    raise ServerError(str(response.request.url), response.status_code, code, message)


def is_keel(url: str) -> bool:
    """True when a keel server answers at `url` (its OpenAPI document is titled "keel"; `/info`
    alone would not tell keel from another Agent Server)."""
    try:
        # Refused at once when nothing listens; a busy server may take seconds to build it.
        response = httpx.get(f"{url}/openapi.json", timeout=httpx.Timeout(10, connect=1))
        return response.status_code == 200 and response.json()["info"]["title"] == "keel"
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False


def wait_for(settings: Settings, url: str | None) -> float:
    """How long to wait for the server: briefly for one the user named, longer for one found
    holding the data dir (it may still be loading its models)."""
    return GIVEN_URL_WAIT_S if url or settings.url else STARTUP_WAIT_S


def find_target(
    settings: Settings, command: str, url: str | None, create: bool = True
) -> str | DataDirLock | None:
    """Where `keel ingest`/`keel docs` work: `url`, else `KEEL_URL`, else the server holding the
    data dir, else (KEEL_DATA_DIR unset) a keel server on the default port, else the local store,
    whose lock is returned (None with a Chroma server: every process writes to it directly).
    Says on stderr which, unless the user named it; with `create` False, a missing local store
    raises `InvalidInput` instead of being created."""
    if url or settings.url:
        return url or settings.url
    if settings.chroma_url:
        print(f"keel {command}: on the Chroma server {settings.chroma_url}", file=sys.stderr)
        return None
    explicit = "data_dir" in settings.model_fields_set
    existing = settings.data_dir.exists() or (explicit and create)
    held = server_or_lock(settings, command) if existing else None
    if isinstance(held, str):
        print(f"keel {command}: through {held}, the server that owns {settings.data_dir}",
              file=sys.stderr)  # fmt: skip
        return held
    default = settings.server_url
    if not explicit and is_keel(default):
        if held:
            held.release()
        print(f"keel {command}: through the keel server at {default} (--url or KEEL_URL name "
              "another; KEEL_DATA_DIR works on a local store)", file=sys.stderr)  # fmt: skip
        return default
    store = settings.data_dir.resolve()
    if held is None:
        if not create and not settings.data_dir.exists():
            raise InvalidInput(f"no keel server at {default} and no local store in {store}")
        held = server_or_lock(settings, command)
        if not isinstance(held, DataDirLock):  # a server took the new store meanwhile
            return held
    print(f"keel {command}: on the local store {store} (no keel server at {default}; --url or "
          "KEEL_URL name one)", file=sys.stderr)  # fmt: skip
    return held
