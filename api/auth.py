"""Who is calling: API keys (stored as SHA-256 hashes) and JWT bearer tokens (HS256 or RS256).

A request carries `Authorization: Bearer <api key or JWT>` or `X-API-Key: <api key>`. A bearer
value shaped like a JWT (three dot-separated parts) is verified as a token when JWT is configured;
anything else is looked up as an API key. Tokens must be signed with the configured key, carry
`exp` (checked) and a `tenant` claim; `sub` is kept when present.
"""

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from graph.context import DEFAULT_TENANT
from graph.errors import ConfigError
from graph.settings import TENANT_PATTERN, Settings

_PEM_BLOCK = re.compile(
    rb"-----BEGIN (?:RSA )?PUBLIC KEY-----.+?-----END (?:RSA )?PUBLIC KEY-----", re.DOTALL
)
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its tenant, the JWT subject if any, and how it authenticated."""

    tenant: str
    method: str
    subject: str | None = None


class AuthError(Exception):
    """Credentials are missing or invalid; `reason` is safe to log, `method` what was tried."""

    def __init__(self, reason: str, method: str | None = None):
        super().__init__(reason)
        self.reason, self.method = reason, method


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which an API key is configured in `KEEL_API_KEYS`."""
    return hashlib.sha256(key.encode()).hexdigest()


def load_public_keys(path: Path) -> list[Any]:
    """Every public key in a PEM file (several blocks allow rotating signing keys)."""
    try:
        blocks = _PEM_BLOCK.findall(path.read_bytes())
        keys = [load_pem_public_key(block) for block in blocks]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"KEEL_JWT_PUBLIC_KEY_FILE {path}: {exc}") from exc
    if not keys:
        raise ConfigError(f"KEEL_JWT_PUBLIC_KEY_FILE {path}: no PEM public key in it")
    return keys


class Authenticator:
    """Resolves a request's credentials to a `Principal`, from the deployment's settings."""

    def __init__(self, settings: Settings):
        self.key_tenants = dict(settings.api_keys)
        self.secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        if self.secret is not None and len(self.secret.encode()) < 32:
            raise ConfigError("KEEL_JWT_SECRET must be at least 32 bytes (RFC 7518, HS256)")
        self.public_keys = (
            load_public_keys(settings.jwt_public_key_file) if settings.jwt_public_key_file else []
        )
        self.audience, self.issuer = settings.jwt_audience, settings.jwt_issuer
        self.leeway = settings.jwt_leeway_s

    @property
    def enabled(self) -> bool:
        """False when nothing is configured: the server is single-tenant and open."""
        return bool(self.key_tenants or self.secret or self.public_keys)

    @property
    def jwt_enabled(self) -> bool:
        """True when HS256 or RS256 tokens can be verified."""
        return bool(self.secret or self.public_keys)

    def authenticate(self, bearer: str | None, api_key: str | None) -> Principal:
        """The caller; `AuthError` when the credentials are missing or do not verify."""
        if not self.enabled:
            return Principal(DEFAULT_TENANT, "none")
        if bearer:
            if self.jwt_enabled and _JWT_SHAPE.match(bearer):
                return self._verify_jwt(bearer)
            return self._api_key(bearer)
        if api_key:
            return self._api_key(api_key)
        raise AuthError("missing_credentials")

    def _api_key(self, key: str) -> Principal:
        tenant = self.key_tenants.get(hash_key(key))
        if tenant is None:
            raise AuthError("invalid_api_key", "api_key")
        return Principal(tenant, "api_key")

    def _verify_jwt(self, token: str) -> Principal:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as exc:
            raise AuthError("malformed_token", "jwt") from exc
        # The key type follows the algorithm we accept, never the other way round.
        if alg == "HS256" and self.secret:
            keys: list[Any] = [self.secret]
        elif alg == "RS256" and self.public_keys:
            keys = self.public_keys
        else:
            raise AuthError("unsupported_algorithm", "jwt")
        claims: dict[str, Any] | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway,
                    options={
                        "require": ["exp", "tenant"],
                        "verify_aud": self.audience is not None,
                    },
                )
                break
            except jwt.InvalidSignatureError:
                continue  # maybe signed by another of the configured public keys
            except jwt.ExpiredSignatureError as exc:
                raise AuthError("expired_token", "jwt") from exc
            except jwt.MissingRequiredClaimError as exc:
                raise AuthError(f"missing_claim_{exc.claim}", "jwt") from exc
            except jwt.InvalidTokenError as exc:
                raise AuthError("invalid_token", "jwt") from exc
        if claims is None:
            raise AuthError("bad_signature", "jwt")
        tenant = claims.get("tenant")
        if not isinstance(tenant, str) or not re.fullmatch(TENANT_PATTERN, tenant):
            raise AuthError("invalid_tenant_claim", "jwt")
        subject = claims.get("sub")
        return Principal(tenant, "jwt", subject if isinstance(subject, str) else None)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def unauthenticated_bind_refusal(settings: Settings) -> str | None:
    """Why `keel serve` must not start (an open server on a non-loopback host), else None."""
    if settings.auth_configured or settings.allow_unauthenticated or is_loopback(settings.host):
        return None
    return (
        f"refusing to serve on {settings.host} without authentication: set KEEL_API_KEYS, "
        "KEEL_JWT_SECRET or KEEL_JWT_PUBLIC_KEY_FILE, or pass --allow-unauthenticated "
        "(KEEL_ALLOW_UNAUTHENTICATED=true) to accept an open, single-tenant server"
    )
