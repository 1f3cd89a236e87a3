"""Firing due crons: each firing is a normal run through the run manager (a row in `keel_runs`,
its events in the durable log), on the cron's thread, or on a new thread of its own."""

import logging
import time
from typing import TYPE_CHECKING

from checkpoints.threads import create_thread
from graph.errors import KeelError

if TYPE_CHECKING:
    from runtime.keel import Keel

log = logging.getLogger("keel.crons")


async def fire_due_crons(keel: "Keel") -> int:
    """Claims the crons due now (no other replica gets the same firing) and submits one run
    for each; a firing that cannot start (its thread busy under `reject`, a model no longer
    allowed) is logged and skipped. Returns how many runs were submitted."""
    submitted = 0
    for cron in await keel.persistence.crons.claim_due(time.time()):
        payload = cron.payload
        (message,) = payload["input"]["messages"]  # the redacted user message
        try:
            thread_id = cron.thread_id
            if thread_id is None:
                record = await create_thread(
                    keel.persistence, cron.tenant, {"cron_id": cron.cron_id}
                )
                thread_id = record["thread_id"]
            await keel.runs.submit(
                cron.tenant,
                thread_id,
                message["content"],
                payload["context"],
                multitask_strategy=payload["multitask_strategy"],
                durability=payload["durability"],
                stream_modes=payload["stream_mode"],
                metadata={**payload["metadata"], "cron_id": cron.cron_id},
                assistant_id=cron.assistant_id,
            )
            submitted += 1
        except KeelError as exc:
            log.warning("cron %s skipped a firing: %s", cron.cron_id, exc)
    return submitted
