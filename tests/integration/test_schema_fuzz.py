"""Schemathesis against the OpenAPI schema of a real `keel serve` (Postgres, Redis, API keys).

Every operation of the live `/openapi.json` is fuzzed twice: once with generated ids (mostly
unknown threads: validation and 404 paths), with schemathesis's coverage phase (each field's
boundary and wrong-type values), once with the ids of a real thread and run (the 2xx paths and
their bodies; fuzzing only: the coverage cases' generation is most of this file's time, and
they are already sent above). The Agent Server's thread, run and store routes are fuzzed once
more on the embedded default (SQLite, no Redis). No response may be a 5xx, and every status
code, content type and body must be one the schema declares; data the schema forbids must get
a 4xx.
"""

import contextlib
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from api.auth import hash_key
from tests.conftest import Server

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    negative_data_rejection,
]
# Bounded and reproducible: the same cases on every CI run, in well under three minutes.
FUZZ = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
CREDENTIALS = ("Authorization", "X-API-Key")
# Data the schema forbids must get one of these (schemathesis's list plus 413 and 415).
REJECTIONS = ("400", "401", "403", "404", "406", "413", "415", "422", "428", "5xx")
TIMEOUT_S = 30  # a run (retrieve, rerank, extractive answer) finishes in about a second


@dataclass
class Api:
    """The server, the tenant's API key header, and a thread with one finished run."""

    server: Server
    headers: dict[str, str]
    thread_id: str
    run_id: str


@contextlib.contextmanager
def _serve(tmp: Path, corpus_dir: Path, tenant: str, **env: str) -> Iterator[Api]:
    """A `keel serve` with one API key for `tenant`, and a thread with one finished run."""
    key = f"key-{uuid.uuid4().hex}"
    shutil.copytree(corpus_dir, tmp / "data")
    settings = {
        "KEEL_DATA_DIR": str(tmp / "data"),
        "KEEL_API_KEYS": json.dumps({hash_key(key): tenant}),
        # The fuzzer sends bad credentials on purpose (401 is checked); a lockout of its
        # address after ten of them would turn every later case into a 429.
        "KEEL_AUTH_FAILURES_PER_MINUTE": "0",
        **env,
    }
    with Server(settings, tmp / "server.log") as server:
        headers = {"X-API-Key": key}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            thread_id = client.post("/v1/threads").json()["thread_id"]
            run = client.post(f"/v1/threads/{thread_id}/runs/wait", json={"message": "chunks?"})
            assert run.status_code == 200, run.text
        yield Api(server, headers, thread_id, run.json()["run_id"])


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path, postgres_url: str, redis_url: str
) -> Iterator[Api]:
    tenant = f"fuzz{uuid.uuid4().hex[:8]}"
    env = {"KEEL_DATABASE_URL": postgres_url, "KEEL_REDIS_URL": redis_url}
    try:
        with _serve(tmp_path_factory.mktemp("fuzz"), corpus_dir, tenant, **env) as served:
            yield served
    finally:
        with psycopg.connect(postgres_url) as conn:  # no fuzzed cron fires in a later test
            conn.execute("DELETE FROM keel_crons WHERE tenant = %s", (tenant,))


@pytest.fixture(scope="module")
def embedded_api(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Iterator[Api]:
    """The embedded default: SQLite checkpoints, runs and store, no Redis."""
    with _serve(tmp_path_factory.mktemp("fuzz-embedded"), corpus_dir, "fuzz") as served:
        yield served


def _load(api: Api, request: pytest.FixtureRequest, coverage: bool) -> schemathesis.BaseSchema:
    # schemathesis 4.15 renames the test node through `_nodeid`, which pytest 9.2 dropped.
    request.node._nodeid = request.node.nodeid
    # The key authenticates under either declared scheme; without this, schemathesis would
    # fill the `Authorization` header (tried before X-API-Key) with generated junk.
    key = api.headers["X-API-Key"]
    auth = {"HTTPBearer": {"bearer": key}, "APIKeyHeader": {"api_key": key}}
    phases = {"coverage": {"enabled": coverage}}
    # A generated upload whose name has no known extension is refused with 415 (declared in
    # the schema), a rejection schemathesis does not count by default.
    rejected = {"expected-statuses": list(REJECTIONS)}
    config = schemathesis.Config.from_dict(
        {
            "auth": {"openapi": auth},
            "phases": phases,
            "checks": {"negative_data_rejection": rejected},
        }
    )
    schema = schemathesis.openapi.from_url(
        f"{api.server.url}/openapi.json", config=config, timeout=10
    )
    schema.config.update(base_url=api.server.url, headers=api.headers)
    return schema


@pytest.fixture
def generated_ids_schema(api: Api, request: pytest.FixtureRequest) -> schemathesis.BaseSchema:
    return _load(api, request, coverage=True)


@pytest.fixture
def real_ids_schema(api: Api, request: pytest.FixtureRequest) -> schemathesis.BaseSchema:
    schema = _load(api, request, coverage=False)
    # The default assistant: its A2A endpoint and agent card answer past the 404.
    ids = {"path.thread_id": api.thread_id, "path.run_id": api.run_id}
    schema.config.update(parameters={**ids, "path.assistant_id": "keel"})
    return schema


@pytest.fixture
def embedded_schema(embedded_api: Api, request: pytest.FixtureRequest) -> schemathesis.BaseSchema:
    schema = _load(embedded_api, request, coverage=True)
    schema.config.update(parameters={"path.thread_id": embedded_api.thread_id})
    return schema


generated_ids = schemathesis.pytest.from_fixture("generated_ids_schema")
# Deleting the shared thread would leave every later case a 404; DELETE is fuzzed with
# generated ids above, and test_server.py checks a real deletion's 204. A real thread's stream
# lasts as long as its client does: it is fuzzed with generated ids (its 4xx paths) only.
real_ids = (
    schemathesis.pytest.from_fixture("real_ids_schema")
    .exclude(method="DELETE", path="/v1/threads/{thread_id}")
    .exclude(method="DELETE", path="/threads/{thread_id}")
    .exclude(method="GET", path="/threads/{thread_id}/stream")
)
# The Agent Server routes of thread TTL, prune, stateless and batch runs and the store, on
# the embedded default as well (the whole schema runs on Postgres above).
EMBEDDED_PATHS = r"^/(threads|threads/prune|threads/\{thread_id\}|runs|runs/batch|store/items.*)$"
embedded = (
    schemathesis.pytest.from_fixture("embedded_schema")
    .include(path_regex=EMBEDDED_PATHS)
    .exclude(method="DELETE", path="/threads/{thread_id}")
)


def call_and_validate(case: schemathesis.Case, api: Api) -> None:
    """Sends the case with the valid API key and runs every check on the response.

    The schema says Bearer *or* X-API-Key; schemathesis treats both as required, so a case
    whose mutation is one credential header is sent with that credential alone: the server
    must then reject it (401) rather than accept it on the other, valid one.
    """
    headers: dict[str, str] | None = api.headers
    meta = case.meta
    data = meta.phase.data if meta else None
    mutated = getattr(data, "parameter", None)
    if (
        meta is not None
        and meta.generation.mode.is_negative
        and getattr(data, "parameter_location", None) == ParameterLocation.HEADER
        and mutated in CREDENTIALS
    ):
        for name in CREDENTIALS:
            if name != mutated and case.headers:
                case.headers.pop(name, None)
        headers = None
    case.call_and_validate(headers=headers, checks=CHECKS, timeout=TIMEOUT_S)


@FUZZ
@generated_ids.parametrize()
def test_generated_ids(case: schemathesis.Case, api: Api) -> None:
    call_and_validate(case, api)


@FUZZ
@real_ids.parametrize()
def test_real_thread_and_run(case: schemathesis.Case, api: Api) -> None:
    call_and_validate(case, api)


@FUZZ
@embedded.parametrize()
def test_agent_routes_on_the_embedded_default(case: schemathesis.Case, embedded_api: Api) -> None:
    call_and_validate(case, embedded_api)
