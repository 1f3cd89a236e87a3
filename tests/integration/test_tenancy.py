"""Tenants are isolated, credentials are checked, limits are shared: two real `keel serve`
replicas on Postgres and Redis, authenticated by API keys and HS256/RS256 JWTs."""

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from api.auth import hash_key
from tests.conftest import Server

RPM = 30
MESSAGE = "Zebra-phrase-4471: how does keel avoid duplicate chunks when ingesting twice?"
HS_SECRET = "hs256-test-secret-" + "x" * 32


class Ctx:
    """The two replicas and the credentials of each tenant."""

    def __init__(self, tmp: Path, servers: list[Server], keys: dict[str, str], rsa_key, run):
        self.tmp, self.servers, self.keys, self.rsa_key = tmp, servers, keys, rsa_key
        self.tenant_a, self.tenant_b, self.tenant_rl = (
            keys["a"][1],
            keys["b"][1],
            keys["rl"][1],
        )
        self.thread_id, self.run_id = run

    def key(self, name: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[name][0]}

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.tmp.glob("server-*.log")))

    def audit(self) -> list[dict]:
        lines = [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]
        return [line for line in lines if "audit" in line]


def hs256(tenant: str | None, exp_in: float = 300, secret: str = HS_SECRET, **claims) -> str:
    body = {"sub": "user-1", "exp": int(time.time() + exp_in), **claims}
    if tenant is not None:
        body["tenant"] = tenant
    return jwt.encode(body, secret, algorithm="HS256")


@pytest.fixture(scope="module")
def ctx(
    tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path, postgres_url: str, redis_url: str
) -> Iterator[Ctx]:
    tmp = tmp_path_factory.mktemp("tenancy")
    suffix = uuid.uuid4().hex[:8]  # fresh tenants: buckets in Redis outlive a test run
    keys = {n: (f"key-{n}-{uuid.uuid4().hex}", f"{n}{suffix}") for n in ("a", "b", "rl")}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp / "jwt-public.pem"
    pem.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    env = {
        "KEEL_DATABASE_URL": postgres_url,
        "KEEL_REDIS_URL": redis_url,
        "KEEL_API_KEYS": json.dumps({hash_key(k): t for k, t in keys.values()}),
        "KEEL_JWT_SECRET": HS_SECRET,
        "KEEL_JWT_PUBLIC_KEY_FILE": str(pem),
        "KEEL_RATE_LIMIT_RPM": str(RPM),
        # the 401 matrix below fails dozens of checks from one address on purpose
        "KEEL_AUTH_FAILURES_PER_MINUTE": "1000",
    }
    servers: list[Server] = []
    try:
        for n in range(2):
            data_dir = tmp / f"data-{n}"
            shutil.copytree(corpus_dir, data_dir)
            servers.append(Server({**env, "KEEL_DATA_DIR": str(data_dir)}, tmp / f"server-{n}.log"))
        a = {"X-API-Key": keys["a"][0]}
        with httpx.Client(base_url=servers[0].url, timeout=60) as client:
            thread_id = client.post("/v1/threads", headers=a).json()["thread_id"]
            result = client.post(
                f"/v1/threads/{thread_id}/runs/wait", json={"message": MESSAGE}, headers=a
            )
            assert result.status_code == 200, result.text
        yield Ctx(tmp, servers, keys, rsa_key, (thread_id, result.json()["run_id"]))
    finally:
        for server in servers:
            server.stop()


def foreign_requests(tid: str, rid: str) -> list[tuple[str, str, dict | None, dict]]:
    """(method, path, json body, extra headers) for every thread and run route on A's thread."""
    run = f"/v1/threads/{tid}/runs/{rid}"
    body = {"message": "hello"}
    return [
        ("GET", f"/v1/threads/{tid}", None, {}),
        ("GET", f"/v1/threads/{tid}/history", None, {}),
        ("GET", f"/v1/threads/{tid}/runs", None, {}),
        ("GET", run, None, {}),
        ("GET", f"{run}/wait", None, {}),
        ("GET", f"{run}/stream", None, {}),
        ("GET", f"{run}/stream", None, {"Last-Event-ID": f"{rid}:2"}),
        ("POST", f"{run}/cancel", None, {}),
        ("POST", f"{run}/resume", None, {}),
        ("POST", f"/v1/threads/{tid}/runs/stream", body, {}),
        ("POST", f"/v1/threads/{tid}/runs/wait", body, {}),
        ("POST", f"/v1/threads/{tid}/runs", body, {}),
        ("DELETE", f"/v1/threads/{tid}", None, {}),
    ]


def test_other_tenant_gets_404_on_every_thread_and_run_route(ctx: Ctx):
    tid, rid = ctx.thread_id, ctx.run_id
    # other tenants than A, each with its own rate-limit bucket (RPM is on)
    rs_b = {"tenant": ctx.tenant_b + "rs", "exp": int(time.time()) + 300}
    as_b = [
        ("api key", ctx.key("b")),
        ("HS256", ctx.bearer(hs256(ctx.tenant_b + "hs"))),
        ("RS256", ctx.bearer(jwt.encode(rs_b, ctx.rsa_key, algorithm="RS256"))),
    ]
    with httpx.Client(timeout=30) as client:
        for n, (how, headers) in enumerate(as_b):
            base = ctx.servers[n % 2].url  # both replicas enforce the same isolation
            for method, path, body, extra in foreign_requests(tid, rid):
                response = client.request(
                    method, base + path, json=body, headers={**headers, **extra}
                )
                assert response.status_code == 404, (how, method, path, response.text)
                assert response.json()["error"]["code"] == "not_found"
            listed = client.get(f"{base}/v1/threads", headers=headers).json()["threads"]
            assert tid not in [t["thread_id"] for t in listed]
        # A (by key, and by an RS256 token naming A) still has everything, on either replica
        rs_a = jwt.encode(
            {"tenant": ctx.tenant_a, "sub": "svc", "exp": int(time.time()) + 300},
            ctx.rsa_key,
            algorithm="RS256",
        )
        for base, headers in (
            (ctx.servers[1].url, ctx.key("a")),
            (ctx.servers[0].url, ctx.bearer(rs_a)),
        ):
            state = client.get(f"{base}/v1/threads/{tid}", headers=headers)
            assert state.status_code == 200 and len(state.json()["messages"]) == 2
            runs = client.get(f"{base}/v1/threads/{tid}/runs", headers=headers).json()
            assert [r["run_id"] for r in runs] == [rid]
            assert (
                client.get(f"{base}/v1/threads/{tid}/runs/{rid}/wait", headers=headers).status_code
                == 200
            )
    cross = [e for e in ctx.audit() if e["audit"] == "cross_tenant"]
    assert {e["tenant"] for e in cross} == {ctx.tenant_b, ctx.tenant_b + "hs", ctx.tenant_b + "rs"}
    assert {e["owner_tenant"] for e in cross} == {ctx.tenant_a}


def test_missing_invalid_and_expired_credentials_get_401(ctx: Ctx):
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    bad = {
        "no credentials": {},
        "unknown api key": {"X-API-Key": "key-nobody"},
        "unknown bearer key": ctx.bearer("key-nobody"),
        "expired HS256": ctx.bearer(hs256(ctx.tenant_a, exp_in=-3600)),
        "HS256 wrong secret": ctx.bearer(hs256(ctx.tenant_a, secret="s" * 48)),
        "HS256 without tenant": ctx.bearer(hs256(None)),
        "HS256 without exp": ctx.bearer(
            jwt.encode({"tenant": ctx.tenant_a}, HS_SECRET, algorithm="HS256")
        ),
        "RS256 other key": ctx.bearer(
            jwt.encode({"tenant": ctx.tenant_a, "exp": now + 300}, other_key, algorithm="RS256")
        ),
        "alg none": ctx.bearer(
            jwt.encode({"tenant": ctx.tenant_a, "exp": now + 300}, None, algorithm="none")
        ),
    }
    url = ctx.servers[0].url
    with httpx.Client(base_url=url, timeout=30) as client:
        for case, headers in bad.items():
            for method, path in (("GET", "/v1/threads"), ("GET", f"/v1/threads/{ctx.thread_id}")):
                response = client.request(method, path, headers=headers)
                assert response.status_code == 401, (case, response.text)
                assert response.json()["error"]["code"] == "unauthorized"
                assert response.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/health").status_code == 200  # liveness stays open
        assert client.get("/openapi.json").status_code == 200
        big = client.get("/v1/threads", headers={**ctx.key("a"), "X-Filler": "f" * 10_000})
        assert big.status_code == 431 and big.json()["error"]["code"] == "headers_too_large"
    failures = [e for e in ctx.audit() if e["audit"] == "auth_failed"]
    reasons = {e["reason"] for e in failures}
    assert {"missing_credentials", "invalid_api_key", "expired_token"} <= reasons
    assert {"bad_signature", "missing_claim_tenant", "missing_claim_exp"} <= reasons


def test_failed_credential_checks_lock_the_address_out(start_server):
    """Guessing keys: past the failures allowed per minute, the address gets 429, and even a
    valid key is not checked until the bucket refills (so a lucky guess learns nothing)."""
    key = f"key-{uuid.uuid4().hex}"
    server = start_server(
        KEEL_API_KEYS=json.dumps({hash_key(key): "locked"}),
        KEEL_AUTH_FAILURES_PER_MINUTE="3",  # per replica here; shared through Redis when set
    )
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v1/threads", headers={"X-API-Key": key}).status_code == 200
        guesses = [
            client.get("/v1/threads", headers={"X-API-Key": f"guess-{n}"}).status_code
            for n in range(5)
        ]
        assert guesses == [401, 401, 401, 429, 429]
        locked = client.get("/v1/threads", headers={"X-API-Key": key})
        assert locked.status_code == 429 and locked.json()["error"]["code"] == "auth_failures"
        assert 1 <= int(locked.headers["retry-after"]) <= 60
        assert client.get("/health").status_code == 200
    audit = [json.loads(line) for line in server.log.read_text().splitlines() if '"audit"' in line]
    assert sum(e["audit"] == "auth_failed" for e in audit) == 3
    assert [e["limit"] for e in audit if e["audit"] == "rate_limited"] == [
        "auth_failures_per_minute"
    ] * 3


def test_rate_limit_shared_by_two_replicas(ctx: Ctx):
    headers = ctx.key("rl")
    urls = [f"{s.url}/v1/threads" for s in ctx.servers]
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=20)) as client:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            responses = list(
                pool.map(lambda i: client.get(urls[i % 2], headers=headers), range(2 * RPM))
            )
        elapsed = time.monotonic() - started
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(limited) == len(responses)
    # burst of RPM, plus what the bucket refilled (RPM/60 per second) while we fired
    expected = RPM + elapsed * RPM / 60
    print(
        f"rate limit: {len(ok)} of {len(responses)} allowed in {elapsed:.2f}s, "
        f"expected {expected:.1f}"
    )
    assert elapsed < 10 and RPM <= len(ok) <= expected + 1
    assert {r.url.port for r in ok} == {s.port for s in ctx.servers}  # both replicas served
    for r in limited:
        assert r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 60
    # another tenant has its own bucket
    with httpx.Client(timeout=30) as client:
        assert client.get(urls[0], headers=ctx.key("a")).status_code == 200
    hits = [e for e in ctx.audit() if e["audit"] == "rate_limited"]
    assert len(hits) == len(limited) and {e["tenant"] for e in hits} == {ctx.tenant_rl}


def test_documents_belong_to_their_tenant(ctx: Ctx):
    """A tenant's upload is retrieved only by that tenant; another tenant cannot delete it."""
    name = "quokka-notes.md"
    text = (
        "# Quokka protocol\n\nThe Quokka-7731 protocol rotates the vault backup keys every 19 days."
    )
    question = "How often does the Quokka-7731 protocol rotate the vault backup keys?"
    a, b = ctx.key("a"), ctx.key("b")

    def cited_docs(client: httpx.Client, headers: dict[str, str]) -> set[str]:
        tid = client.post("/v1/threads", headers=headers).json()["thread_id"]
        result = client.post(
            f"/v1/threads/{tid}/runs/wait", json={"message": question}, headers=headers
        )
        assert result.status_code == 200, result.text
        return {c["id"].split("#")[0] for c in result.json()["citations"]}

    # Each replica here embeds its own Chroma copy, so the whole exchange uses one replica.
    with httpx.Client(base_url=ctx.servers[0].url, timeout=120) as client:
        upload = client.post(
            "/v1/documents", files={"files": (name, text.encode(), "text/markdown")}, headers=a
        )
        assert upload.status_code == 201, upload.text
        (doc_id,) = upload.json()["doc_ids"]
        assert doc_id in cited_docs(client, a)
        assert doc_id not in cited_docs(client, b)
        listed = {
            who: [d["id"] for d in client.get("/v1/documents", headers=h).json()["documents"]]
            for who, h in (("a", a), ("b", b))
        }
        assert listed == {"a": [doc_id], "b": []}
        gone = client.delete(f"/v1/documents/{doc_id}", headers=b)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
        assert doc_id in cited_docs(client, a)  # B's attempt removed nothing
        assert client.delete(f"/v1/documents/{doc_id}", headers=a).status_code == 204
        assert doc_id not in cited_docs(client, a)
    ingested = [e for e in ctx.audit() if e["audit"] == "documents_ingested"]
    assert [e["tenant"] for e in ingested] == [ctx.tenant_a]


def test_deletion_audited_without_secrets_or_message_text(ctx: Ctx):
    with httpx.Client(base_url=ctx.servers[1].url, timeout=60) as client:
        assert (
            client.delete(f"/v1/threads/{ctx.thread_id}", headers=ctx.key("a")).status_code == 204
        )
        assert client.get(f"/v1/threads/{ctx.thread_id}", headers=ctx.key("a")).status_code == 404
    events = ctx.audit()
    deleted = [e for e in events if e["audit"] == "thread_deleted"]
    assert deleted == [
        {**deleted[0], "tenant": ctx.tenant_a, "thread_id": ctx.thread_id, "method": "DELETE"}
    ]
    assert any(e["audit"] == "auth_failed" for e in events)
    logs = ctx.logs()
    for key, _ in ctx.keys.values():
        assert key not in logs  # not in audit lines, nor anywhere in the server log
    audit_text = "\n".join(json.dumps(e) for e in events)
    assert "Zebra-phrase-4471" not in audit_text and HS_SECRET not in logs
