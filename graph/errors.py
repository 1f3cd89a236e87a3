"""The one error tree of keel. HTTP mapping lives in `api/`, never here."""


class KeelError(Exception):
    """Base of every error keel raises on purpose."""

    code = "internal_error"
    retryable = False


class InvalidInput(KeelError):
    """The caller sent something keel cannot accept (bad file type, empty message, ...)."""

    code = "invalid_input"


class DuplicateDocuments(InvalidInput):
    """One ingestion names the same document id twice (two files of one name, a repeated JSONL
    id): nothing is written."""

    code = "duplicate_documents"


class StoreBusy(KeelError):
    """The embedded data directory is held by another process (a running `keel serve`)."""

    code = "store_busy"


class NotFound(KeelError):
    """A thread, run or document does not exist (or belongs to someone else)."""

    code = "not_found"


class Conflict(KeelError):
    """The thread already has a run in progress and the multitask strategy is `reject`."""

    code = "thread_busy"
    retryable = True


class StoreUnavailable(KeelError):
    """A backing store (vector store, cache, checkpoints) did not answer."""

    code = "store_unavailable"
    retryable = True


class ProviderError(KeelError):
    """The LLM provider failed; the run falls back to the next answerer.

    `partial` is the text already streamed to the client before the failure (never replayed:
    the next model continues from it)."""

    code = "provider_error"
    retryable = True

    def __init__(self, message: str, partial: str = ""):
        super().__init__(message)
        self.partial = partial


class ProviderTimeout(ProviderError):
    """The provider did not connect, send a first token, or send the next one in time."""

    code = "provider_timeout"


class CircuitOpen(ProviderError):
    """The target's circuit breaker is open: the call was not made."""

    code = "circuit_open"


class DeadlineExceeded(KeelError):
    """The run's total deadline passed."""

    code = "deadline_exceeded"
    retryable = True


class ConfigError(KeelError):
    """The deployment's settings are inconsistent."""

    code = "config_error"


class ThreadExists(Conflict):
    """A client-chosen thread id is already taken (by this tenant or another)."""

    code = "thread_exists"
    retryable = False


class AssistantExists(Conflict):
    """A client-chosen assistant id is already taken by this tenant."""

    code = "assistant_exists"
    retryable = False
