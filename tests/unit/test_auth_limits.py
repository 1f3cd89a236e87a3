"""Authentication rules, the bind refusal and the in-process limiter (no server, no network)."""

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from api.auth import Authenticator, AuthError, hash_key, unauthenticated_bind_refusal
from graph.errors import ConfigError
from graph.settings import Settings
from runtime.limits import Limiter

SECRET = "unit-secret-" + "k" * 32


def test_api_keys_are_configured_by_hash_only():
    auth = Authenticator(Settings(api_keys={hash_key("clear-key"): "acme"}))
    assert auth.authenticate(None, "clear-key").tenant == "acme"
    assert auth.authenticate("clear-key", None).tenant == "acme"
    with pytest.raises(AuthError, match="invalid_api_key"):
        auth.authenticate(None, hash_key("clear-key"))  # the hash itself is not a key
    with pytest.raises(AuthError, match="missing_credentials"):
        auth.authenticate(None, None)
    with pytest.raises(ValueError):
        Settings(api_keys={"clear-key": "acme"})
    with pytest.raises(ValueError):
        Settings(api_keys={hash_key("k"): "bad.tenant"})


def test_open_server_is_single_tenant():
    assert Authenticator(Settings()).authenticate(None, None).tenant == "default"


def test_jwt_hs256_and_rs256(tmp_path: Path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "keys.pem"
    pem.write_bytes(
        b"".join(
            k.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            for k in (private, rotated)
        )
    )
    auth = Authenticator(Settings(jwt_secret=SECRET, jwt_public_key_file=pem, jwt_leeway_s=0))
    exp = int(time.time()) + 60
    hs = jwt.encode({"tenant": "t1", "sub": "u", "exp": exp}, SECRET, algorithm="HS256")
    assert auth.authenticate(hs, None).subject == "u"
    for key in (private, rotated):
        rs = jwt.encode({"tenant": "t2", "exp": exp}, key, algorithm="RS256")
        assert auth.authenticate(rs, None).tenant == "t2"
    # only HS256 and RS256 are accepted, whatever the token header says
    with pytest.raises(AuthError):
        auth.authenticate(jwt.encode({"tenant": "t", "exp": exp}, "x" * 48, "HS384"), None)
    with pytest.raises(AuthError, match="expired_token"):
        auth.authenticate(jwt.encode({"tenant": "t", "exp": 1}, SECRET, "HS256"), None)
    with pytest.raises(AuthError, match="invalid_tenant_claim"):
        auth.authenticate(jwt.encode({"tenant": "a.b", "exp": exp}, SECRET, "HS256"), None)


def test_non_loopback_bind_needs_auth_or_explicit_flag():
    assert unauthenticated_bind_refusal(Settings(host="127.0.0.1")) is None
    assert unauthenticated_bind_refusal(Settings(host="::1")) is None
    assert "refusing" in (unauthenticated_bind_refusal(Settings(host="0.0.0.0")) or "")
    assert (
        unauthenticated_bind_refusal(Settings(host="0.0.0.0", allow_unauthenticated=True)) is None
    )
    assert unauthenticated_bind_refusal(Settings(host="0.0.0.0", jwt_secret=SECRET)) is None


async def test_in_process_bucket_and_token_quotas():
    limiter = Limiter(Settings(rate_limit_rpm=3, tokens_per_day=100, tokens_per_minute=50))
    waits = [await limiter.take("t") for _ in range(4)]
    assert waits[:3] == [0, 0, 0] and 0 < waits[3] <= 20
    assert await limiter.take("other") == 0
    await limiter.count_usage("t", "run-1", {"input_tokens": 40, "output_tokens": 20})
    await limiter.count_usage("t", "run-1", {"input_tokens": 40, "output_tokens": 20})  # replay
    assert await limiter.tokens_used("t") == 60
    assert await limiter.tokens_used("t", "minute") == 60
    assert await limiter.tokens_used("other", "minute") == 0


def test_short_hs256_secret_is_refused():
    with pytest.raises(ConfigError):
        Authenticator(Settings(jwt_secret="short"))
