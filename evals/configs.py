"""Named evaluation configurations and `key=value` overrides of per-run knobs and settings."""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from graph.context import Context
from graph.errors import InvalidInput
from graph.settings import Settings

# Eval runs keep 100 fused candidates so that recall@100 is measurable, and bypass the cache.
EVAL_BASE: dict[str, Any] = {"candidates": 100, "use_cache": False}
# Quality must not depend on how busy the machine is: the reranker embeds sentence vectors on a
# chunk's first query, which can outlast the serving budget (2 s) on a loaded CPU. Latency is
# still measured and reported.
EVAL_SETTINGS: dict[str, Any] = {"rerank_timeout_s": 60.0}

# The configurations `--compare` knows by name; "default" is what keel ships (hybrid + rerank).
NAMED: dict[str, dict[str, Any]] = {
    "dense": {"retrieval": "dense", "rerank": False},
    "bm25": {"retrieval": "lexical", "rerank": False},
    "hybrid": {"retrieval": "hybrid", "rerank": False},
    "hybrid+rerank": {"retrieval": "hybrid", "rerank": True},
    "dense+rerank": {"retrieval": "dense", "rerank": True},
    "bm25+rerank": {"retrieval": "lexical", "rerank": True},
    "default": {},
    "shipped": {"candidates": Context.candidates},
    "top_k=3": {"top_k": 3},
    "top_k=10": {"top_k": 10},
}
DEFAULT_COMPARE = ("dense", "bm25", "hybrid", "hybrid+rerank")

_CONTEXT_FIELDS = {f.name: f for f in dataclasses.fields(Context)}
_SETTINGS_FIELDS = set(Settings.model_fields)


@dataclass(frozen=True)
class EvalConfig:
    """One configuration to evaluate: per-run knobs (Context) and deployment settings."""

    name: str
    context: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def build_context(self, **extra: Any) -> Context:
        """The run's Context: eval base, then this configuration, then `extra`."""
        return Context(**{**EVAL_BASE, **self.context, **extra})

    def describe(self) -> dict[str, Any]:
        """Every knob this configuration sets, for reports."""
        return {**EVAL_BASE, **EVAL_SETTINGS, **self.context, **self.settings}


def _coerce(raw: str, example: Any) -> Any:
    if isinstance(example, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise InvalidInput(f"expected a boolean, got {raw!r}")
    if isinstance(example, int):
        return int(raw)
    if isinstance(example, float):
        return float(raw)
    if raw.lower() in ("none", "null"):
        return None
    return raw


def parse_overrides(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`key=value` strings to (context, settings) overrides, typed by the field they set."""
    context: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    defaults = Context()
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise InvalidInput(f"--set {pair!r}: expected key=value")
        try:
            if key in _CONTEXT_FIELDS:
                context[key] = _coerce(raw, getattr(defaults, key))
            elif key in _SETTINGS_FIELDS:
                example = Settings.model_fields[key].default
                settings[key] = _coerce(raw, example)
            else:
                raise InvalidInput(
                    f"--set {key}: unknown; per-run knobs: {', '.join(_CONTEXT_FIELDS)}; "
                    "or any KEEL_ setting"
                )
        except ValueError as exc:
            raise InvalidInput(f"--set {pair!r}: {exc}") from exc
    return context, settings


def resolve(name: str) -> EvalConfig:
    """A configuration by name: a named one, or inline `key=value;key=value` overrides."""
    name = name.strip()
    if name in NAMED:
        return EvalConfig(name, dict(NAMED[name]))
    if "=" in name:
        context, settings = parse_overrides([p for p in name.split(";") if p.strip()])
        return EvalConfig(name, context, settings)
    raise InvalidInput(f"unknown configuration {name!r}; known: {', '.join(NAMED)} or key=value")


def configurations(
    config: str | None, compare: str | None, overrides: list[str] | None
) -> list[EvalConfig]:
    """The configurations one `keel eval` runs; `--set` overrides apply to every one of them."""
    names = [n for n in (compare or "").split(",") if n.strip()] or [config or "default"]
    extra_context, extra_settings = parse_overrides(overrides or [])
    out = []
    for name in names:
        base = resolve(name)
        out.append(
            EvalConfig(
                base.name, {**base.context, **extra_context}, {**base.settings, **extra_settings}
            )
        )
    return out
