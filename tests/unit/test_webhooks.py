"""Which webhook URLs a run may name (runtime/webhooks.py)."""

import asyncio

import pytest

from graph.errors import InvalidInput
from runtime.webhooks import check_url, deliver


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/run", "http://93.184.216.34:8080/x?y=1", "https://[2606:4700::1]/"],
)
def test_public_http_urls_pass(url: str) -> None:
    assert check_url(url, allow_private=False) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/run",
        "file:///etc/passwd",
        "http:///path-only",
        "/threads",
        "javascript:alert(1)",
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://api.localhost/hook",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://0.0.0.0/",
    ],
)
def test_other_schemes_and_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="webhook"):
        check_url(url, allow_private=False)


def test_internal_addresses_pass_when_allowed() -> None:
    assert check_url("http://127.0.0.1:9/hook", allow_private=True) == "http://127.0.0.1:9/hook"
    with pytest.raises(InvalidInput):
        check_url("ftp://127.0.0.1/hook", allow_private=True)


async def test_a_host_name_resolving_to_an_internal_address_gets_nothing() -> None:
    """`check_url` refuses internal addresses it can see; `deliver` resolves the host name."""
    connections = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(await reader.read(65536))
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://localhost:{server.sockets[0].getsockname()[1]}/hook"
    async with server:
        assert await deliver(url, {"run_id": "r"}, 2, allow_private=False) is None
        assert connections == []
        assert await deliver(url, {"run_id": "r"}, 2, allow_private=True) == 204
        assert len(connections) == 1 and b'{"run_id":"r"}' in connections[0]
