"""Server child processes, for `keel bench` and the test suite: start one on a free port, wait
until it answers, stop it with everything it spawned."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`command` run in its own session with exactly `env`, output to `log`, up once `ready_path`
    answers 200: the constructor waits for it, unless `wait` is false (then `wait_ready` does,
    so that several processes start at once).

    Raises `RuntimeError` (with the log's tail) when the process exits or is not up in time."""

    def __init__(
        self,
        command: list[str],
        port: int,
        env: dict[str, str],
        log: Path,
        ready_path: str = "/health",
        timeout_s: float = 120,
        cwd: Path | None = None,
        wait: bool = True,
    ):
        self.port, self.log = port, log
        self.url = f"http://127.0.0.1:{port}"
        self._command, self._ready_path, self._timeout_s = command, ready_path, timeout_s
        self._deadline = time.monotonic() + timeout_s
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Returns once the process answers; stops it and raises when it exits or times out."""
        name = self._command[0]
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + self._ready_path, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > self._deadline:
                self.stop()
                raise RuntimeError(f"{name} not up after {self._timeout_s:.0f} s:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 60) -> str:
        """The last lines of the process's output."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the whole process group (servers may spawn workers), SIGKILL after 20 s."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
