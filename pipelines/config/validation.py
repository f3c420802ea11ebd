"""Validation errors as one line per bad key, naming its full dotted key (with a suggestion
for a mistyped one)."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from pipelines.config.strict_yaml import echo


class KeyedErrors(ValueError):
    """Several bad keys at once: each line names its full dotted key (the source is added)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def _suggest(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
    return (
        f"; did you mean {close[0]!r}?"
        if close
        else f"; valid keys: {', '.join(model.model_fields)}"
    )


def _model_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model under ``root`` that owns the key at ``loc`` (for suggestions)."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        args = getattr(ann, "__args__", (ann,))
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def error_lines(err: ValidationError, root: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per error of validating ``root``, each naming its full dotted key.

    ``prefix`` is where ``root`` sits in the config (``forecasters.sma_50`` for a
    forecaster's parameters); the forecasters' own lines pass through as they are.
    """
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join([*filter(None, [prefix]), *(str(p) for p in loc)]) or "<top level>"
        keyed = e.get("ctx", {}).get("error")
        if isinstance(keyed, KeyedErrors):
            lines.extend(keyed.lines)
        elif e["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r}{_suggest(str(loc[-1]), _model_at(loc, root))}")
        elif e["type"] == "missing":
            lines.append(f"missing required key {key!r}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg} (got {echo(e.get('input'))})")
    return lines
