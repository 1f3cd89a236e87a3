"""The one error tree of keel. HTTP mapping lives in `api/`, never here."""


class KeelError(Exception):
    """Base of every error keel raises on purpose."""

    code = "internal_error"
    retryable = False


class InvalidInput(KeelError):
    """The caller sent something keel cannot accept (bad file type, empty message, ...)."""

    code = "invalid_input"


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
    """The LLM provider failed; the run falls back to the next answerer."""

    code = "provider_error"
    retryable = True


class ConfigError(KeelError):
    """The deployment's settings are inconsistent."""

    code = "config_error"


class ThreadExists(Conflict):
    """A client-chosen thread id is already taken (by this tenant or another)."""

    code = "thread_exists"
    retryable = False
