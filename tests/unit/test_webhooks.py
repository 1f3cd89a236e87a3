"""Which webhook URLs a run may name (runtime/webhooks.py)."""

import pytest

from graph.errors import InvalidInput
from runtime.webhooks import check_url


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
