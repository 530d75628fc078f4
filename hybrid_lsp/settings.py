"""The server's settings: one typed tree, read from the client in camelCase.

Where settings come from, in order: defaults, `initializationOptions`, then
`workspace/configuration` (section `hybridLsp`) at start-up and on every
`workspace/didChangeConfiguration`. Each update is merged field by field into the
previous settings: a valid value replaces the old one; an invalid or unknown one is
reported (the server shows it with `window/showMessage`) and the previous value stays.

Wire names: `model.path`, `completion.debounceMs`, ... (`settings_schema()` lists them;
the VS Code extension contributes exactly these keys under `hybridLsp.`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

#: The `workspace/configuration` section and the VS Code settings prefix.
SECTION = "hybridLsp"
BACKENDS = ("auto", "torch", "llama")
LOG_LEVELS = ("error", "warning", "info", "debug")


def _meta(description: str, *, minimum: float | None = None, maximum: float | None = None,
          choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    return {"description": description, "minimum": minimum, "maximum": maximum,
            "choices": choices}


@dataclass(kw_only=True)
class ModelSettings:
    """Which model file runs, and on what."""

    path: str = field(default="", metadata=_meta(
        "Path of the GGUF model file; empty means the embedded default model."))
    backend: str = field(default="auto", metadata=_meta(
        "Inference backend: auto (torch on a CUDA GPU, llama.cpp otherwise), torch or llama.",
        choices=BACKENDS))


@dataclass(kw_only=True)
class CompletionSettings:
    """Latency and size limits of one completion."""

    context_budget_tokens: int = field(default=2048, metadata=_meta(
        "Tokens of prompt (workspace context plus the current file) given to the model.",
        minimum=64, maximum=262144))
    latency_budget_ms: int = field(default=2000, metadata=_meta(
        "Deadline of one generation in milliseconds; the engine returns what it has then.",
        minimum=10, maximum=60000))
    debounce_ms: int = field(default=50, metadata=_meta(
        "Wait this long after a request before generating; a newer request replaces it.",
        minimum=0, maximum=5000))
    max_tokens: int = field(default=48, metadata=_meta(
        "Most tokens generated for one completion.", minimum=1, maximum=1024))


@dataclass(kw_only=True)
class FeatureSettings:
    """Which features are on."""

    inline_completion: bool = field(default=True, metadata=_meta(
        "Serve textDocument/inlineCompletion (ghost text)."))
    completion: bool = field(default=True, metadata=_meta(
        "Serve textDocument/completion (completion items)."))
    code_actions: bool = field(default=True, metadata=_meta(
        "Offer refactor suggestions as code actions."))
    cache_warming: bool = field(default=True, metadata=_meta(
        "Warm the engine's prompt cache in the background when the context changes."))


@dataclass(kw_only=True)
class LogSettings:
    """What goes to the log."""

    level: str = field(default="info", metadata=_meta(
        "Log level of the server log.", choices=LOG_LEVELS))
    include_text: bool = field(default=False, metadata=_meta(
        "Debugging: also log prompt and completion text (off: only sizes and timings)."))


@dataclass(kw_only=True)
class Settings:
    """All settings of the server."""

    model: ModelSettings = field(default_factory=ModelSettings)
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    log: LogSettings = field(default_factory=LogSettings)


_GROUPS = (ModelSettings, CompletionSettings, FeatureSettings, LogSettings, Settings)


def camel(name: str) -> str:
    """snake_case -> camelCase (`debounce_ms` -> `debounceMs`)."""
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def snake(name: str) -> str:
    """camelCase -> snake_case."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    for cls in _GROUPS:
        renames = {f.name: override(rename=camel(f.name)) for f in dataclasses.fields(cls)}
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **renames))
        conv.register_structure_hook(
            cls, make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **renames))
    return conv


CONVERTER = _make_converter()


def to_wire(settings: Settings) -> dict[str, Any]:
    """The settings as the client spells them (nested camelCase dict)."""
    return CONVERTER.unstructure(settings)


def _check_leaf(f: dataclasses.Field, value: Any) -> Any:
    """The value converted to the field's type, or ValueError saying what was expected."""
    kind = {"str": str, "int": int, "bool": bool, "float": float}[str(f.type)]
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"expected {kind.__name__}, got {value!r}")
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ValueError(f"expected one of {', '.join(meta['choices'])}, got {value!r}")
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise ValueError(f"expected at least {meta['minimum']}, got {value}")
    if meta.get("maximum") is not None and value > meta["maximum"]:
        raise ValueError(f"expected at most {meta['maximum']}, got {value}")
    return value


def _merge(obj: Any, raw: Any, prefix: str, errors: list[str]) -> Any:
    if not isinstance(raw, dict):
        errors.append(f"{prefix or SECTION}: expected an object, got {raw!r}")
        return obj
    fields = {camel(f.name): f for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        f = fields.get(key) or fields.get(camel(key))  # snake_case keys are accepted too
        where = f"{prefix}.{key}" if prefix else key
        if f is None:
            errors.append(f"{where}: unknown setting")
            continue
        current = getattr(obj, f.name)
        if value is None:  # the client has no value for it: keep ours
            continue
        if dataclasses.is_dataclass(current):
            changes[f.name] = _merge(current, value, where, errors)
            continue
        try:
            changes[f.name] = _check_leaf(f, value)
        except ValueError as e:
            errors.append(f"{where}: {e}; keeping {current!r}")
    return dataclasses.replace(obj, **changes)


def merge_settings(previous: Settings, raw: Any) -> tuple[Settings, list[str]]:
    """Apply the client's (partial) settings on top of `previous`.

    Returns the new settings and one message per rejected value; a rejected value leaves
    the previous one in place. `raw` may also be wrapped in `{"hybridLsp": {...}}`.
    """
    if raw is None:
        return previous, []
    if isinstance(raw, dict) and set(raw) == {SECTION}:
        raw = raw[SECTION]
    errors: list[str] = []
    return _merge(previous, raw, "", errors), errors


def settings_schema() -> list[dict[str, Any]]:
    """Every leaf setting: wire key (`completion.debounceMs`), type, default, limits, text.

    The editor clients contribute exactly these keys (a test in each client checks it).
    """
    out: list[dict[str, Any]] = []

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            key = f"{prefix}{camel(f.name)}"
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
                continue
            entry = {"key": key, "type": str(f.type), "default": value,
                     "description": f.metadata["description"]}
            for limit in ("minimum", "maximum", "choices"):
                if f.metadata.get(limit) is not None:
                    entry[limit] = f.metadata[limit]
            out.append(entry)

    walk(Settings(), "")
    return out
