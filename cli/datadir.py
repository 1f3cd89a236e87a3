"""Who owns an embedded data directory.

Chroma's embedded store (`PersistentClient`) must have one writer process: a second process
writing under a running server leaves the server reading segments that vanished underneath it.
So `keel serve` holds an OS lock (`flock`) on `<data_dir>/owner.lock` for its whole life and
writes its URL and pid into that file; `keel ingest` and `keel docs` then go through that
server's API, and a second `keel serve` refuses. The kernel drops the lock when its process
dies, so a crashed owner leaves a stale file but never a stale lock.
"""

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from graph.errors import StoreBusy
from graph.settings import Settings

LOCK_NAME = "owner.lock"


@dataclass(frozen=True)
class Owner:
    """The process holding a data directory: a server (with its URL) or a local command."""

    pid: int
    command: str
    url: str = ""
    since: str = ""

    def describe(self) -> str:
        """For messages: `keel serve (pid 12, http://127.0.0.1:8000)`."""
        where = f", {self.url}" if self.url else ""
        return f"keel {self.command} (pid {self.pid}{where})"


class DataDirLock:
    """The exclusive, non-blocking owner lock of one data directory."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self, owner: Owner) -> bool:
        """Takes the lock and records `owner` in it; False when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        file.seek(0)
        file.truncate()
        file.write(json.dumps(asdict(owner)))
        file.flush()
        self._file = file
        return True

    def holder(self) -> Owner | None:
        """The recorded owner, read without taking the lock (None when unreadable)."""
        try:
            return Owner(**json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def release(self) -> None:
        """Empties the record and drops the lock."""
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self) -> "DataDirLock":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def local_url(settings: Settings) -> str:
    """The URL a local client reaches `keel serve` at."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def owner(command: str, url: str = "") -> Owner:
    """This process as an owner."""
    return Owner(os.getpid(), command, url, datetime.now(UTC).isoformat(timespec="seconds"))


def hold_for_serving(settings: Settings) -> DataDirLock | None:
    """The lock `keel serve` holds on an embedded store (None with a Chroma server, where
    processes share the store safely); raises `StoreBusy` when the directory is taken."""
    if settings.chroma_url:
        return None
    lock = DataDirLock(settings.data_dir)
    if not lock.acquire(owner("serve", local_url(settings))):
        raise StoreBusy(
            f"{settings.data_dir} is in use by {_holder(lock)}: one process at a time may "
            "serve an embedded store; stop it, serve another KEEL_DATA_DIR, or share a Chroma "
            "server (KEEL_CHROMA_URL)"
        )
    return lock


def _holder(lock: DataDirLock) -> str:
    held = lock.holder()
    return held.describe() if held else "another keel process"


def server_or_lock(settings: Settings, command: str) -> str | DataDirLock | None:
    """Where a local command (`keel ingest`, `keel docs`) must write: the URL of the server
    holding the embedded store, else the lock it now holds itself (None with a Chroma server).
    Raises `StoreBusy` when another local command holds the store."""
    if settings.chroma_url:
        return None
    lock = DataDirLock(settings.data_dir)
    if lock.acquire(owner(command)):
        return lock
    held = lock.holder()
    if held and held.url:
        return held.url
    raise StoreBusy(f"{settings.data_dir} is in use by {_holder(lock)}; retry when it finishes")
