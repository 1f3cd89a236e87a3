"""Crons: runs on a schedule, per tenant, durable in `keel_crons` (see `checkpoints.crons`).

A cron's input, knobs and stream modes are checked when it is created, and its user message is
stored redacted, like a run's; each firing is then a normal run (`runtime.crons`) on the cron's
thread, or on a new thread tagged `{"cron_id": ...}` (kept: keel does not delete it)."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status

from api.agent.assistants import ASSISTANT_ID, GRAPH_ID, load_assistant
from api.agent.runs import _knobs, _message, _modes
from api.agent.schemas import CronCreate, CronPatch, CronSearch, RunCreate
from api.deps import Keel, KeelDep, TenantDep, ThreadIdPath
from checkpoints.crons import CronSpec, next_fire
from checkpoints.threads import get_thread
from graph.errors import InvalidInput

router = APIRouter(tags=["agent: crons"])
CronIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a cron id")]
# The run fields a cron passes on to each of its runs.
_RUN_FIELDS = {"assistant_id", "input", "config", "context", "metadata", "stream_mode"}


async def _spec(keel: Keel, tenant: str, thread_id: str | None, body: CronCreate) -> CronSpec:
    """The cron `body` describes, checked now rather than at each firing."""
    refused = [f for f in ("webhook", "interrupt_before", "interrupt_after") if getattr(body, f)]
    if refused:
        raise InvalidInput(f"keel does not serve {', '.join(refused)} on crons")
    if body.on_run_completed == "delete":
        raise InvalidInput('keel keeps the threads of cron runs: on_run_completed must be "keep"')
    next_fire(body.schedule, body.timezone, 0)  # 422 for a bad schedule or timezone
    run = RunCreate.model_validate(body.model_dump(include=_RUN_FIELDS, exclude_unset=True))
    message = _message(run)
    if message is None:
        raise InvalidInput('a cron needs input with "messages" holding a user message')
    if len(message) > keel.settings.max_message_chars:
        raise InvalidInput(f"message longer than {keel.settings.max_message_chars} characters")
    assistant = await load_assistant(keel, tenant, body.assistant_id)
    knobs = _knobs(assistant, run)
    if not keel.deps.llm.allows(knobs.get("model")):
        raise InvalidInput(f"model {knobs.get('model')!r} is not allowed on this server")
    if thread_id is not None:
        await get_thread(keel.persistence, tenant, thread_id)
    # Only the redacted message is stored, as for runs.
    redacted = keel.deps.redactor.redact(message).text
    modes, metadata = _modes(run), body.metadata or {}
    strategy, durability = body.multitask_strategy, body.durability
    return CronSpec(
        assistant_id=assistant["assistant_id"],
        thread_id=thread_id,
        schedule=body.schedule,
        timezone=body.timezone,
        end_time=body.end_time.timestamp() if body.end_time else None,
        enabled=body.enabled,
        on_run_completed=None if thread_id else "keep",
        payload={
            "assistant_id": assistant["assistant_id"],
            "input": {"messages": [{"role": "user", "content": redacted}]},
            "context": knobs,
            "metadata": metadata,
            "stream_mode": modes,
            "multitask_strategy": strategy,
            "durability": durability,
        },
        metadata=metadata,
    )


@router.post("/runs/crons")
async def create(body: CronCreate, keel: KeelDep, tenant: TenantDep) -> dict[str, Any]:
    """A cron whose every firing runs on a new thread of its own."""
    spec = await _spec(keel, tenant, None, body)
    return (await keel.persistence.crons.create(tenant, spec)).body()


@router.post("/threads/{thread_id}/runs/crons")
async def create_for_thread(
    thread_id: ThreadIdPath, body: CronCreate, keel: KeelDep, tenant: TenantDep
) -> dict[str, Any]:
    """A cron whose every firing runs on this thread (its multitask strategy applies)."""
    spec = await _spec(keel, tenant, thread_id, body)
    return (await keel.persistence.crons.create(tenant, spec)).body()


async def _matching(keel: Keel, tenant: str, query: CronSearch) -> list[dict[str, Any]]:
    assistant_id = ASSISTANT_ID if query.assistant_id == GRAPH_ID else query.assistant_id
    found = await keel.persistence.crons.search(
        tenant,
        assistant_id,
        query.thread_id,
        query.enabled,
        query.metadata,
        query.sort_by,
        query.sort_order == "desc",
    )
    return [cron.body() for cron in found]


@router.post("/runs/crons/search")
async def search(
    keel: KeelDep, tenant: TenantDep, query: CronSearch | None = None
) -> list[dict[str, Any]]:
    """The tenant's crons matching assistant, thread, enabled and metadata, sorted and paged."""
    query = query or CronSearch()
    page = (await _matching(keel, tenant, query))[query.offset : query.offset + query.limit]
    if query.select:
        page = [{k: v for k, v in cron.items() if k in query.select} for cron in page]
    return page


@router.post("/runs/crons/count")
async def count(keel: KeelDep, tenant: TenantDep, query: CronSearch | None = None) -> int:
    """How many of the tenant's crons match."""
    return len(await _matching(keel, tenant, query or CronSearch()))


@router.get("/runs/crons/{cron_id}")
async def get(cron_id: CronIdPath, keel: KeelDep, tenant: TenantDep) -> dict[str, Any]:
    """A cron of the tenant's."""
    return (await keel.persistence.crons.get(tenant, cron_id)).body()


@router.patch("/runs/crons/{cron_id}")
async def update(
    cron_id: CronIdPath, body: CronPatch, keel: KeelDep, tenant: TenantDep
) -> dict[str, Any]:
    """Changes a cron of the tenant's: the given fields replace its own (metadata is merged,
    new knobs start again from the assistant's); the whole is checked as on creation."""
    crons = keel.persistence.crons
    cron = await crons.get(tenant, cron_id)
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise InvalidInput("the update sets no field")
    payload = cron.payload
    current: dict[str, Any] = {
        "schedule": cron.schedule,
        "assistant_id": cron.assistant_id,
        "input": payload["input"],
        "metadata": cron.metadata,
        "stream_mode": payload["stream_mode"],
        "multitask_strategy": payload["multitask_strategy"],
        "durability": payload["durability"],
        "end_time": cron.body()["end_time"],
        "enabled": cron.enabled,
        "timezone": cron.timezone,
    }
    if "config" not in changes and "context" not in changes:
        current["context"] = payload["context"]
    changes["metadata"] = {**cron.metadata, **(changes.get("metadata") or {})}
    merged = CronCreate.model_validate({**current, **changes})
    spec = await _spec(keel, tenant, cron.thread_id, merged)
    return (await crons.update(tenant, cron_id, spec)).body()


@router.delete(
    "/runs/crons/{cron_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
async def delete(cron_id: CronIdPath, keel: KeelDep, tenant: TenantDep) -> Response:
    """Deletes a cron of the tenant's; the runs it already started are kept."""
    await keel.persistence.crons.delete(tenant, cron_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
