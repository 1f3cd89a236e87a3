"""`/ok` and `/info`: what the SDKs and Studio ask before anything else."""

from importlib.metadata import version

from fastapi import APIRouter

router = APIRouter(tags=["agent: system"])


@router.get("/ok")
async def ok() -> dict[str, bool]:
    """Liveness in the Agent Server's form."""
    return {"ok": True}


@router.get("/info")
async def info() -> dict[str, object]:
    """The server's version and which optional parts of the Agent Server API it serves."""
    return {
        "version": version("keel"),
        "langgraph_py_version": version("langgraph"),
        "flags": {"assistants": True, "crons": True, "langsmith": False},
        "host": {"kind": "self-hosted", "project_id": None, "revision_id": None},
    }
