"""One-line messages from pydantic validation errors, and the errors of cross-field rules.

Shared by the training configuration (:mod:`pvdetect.config`) and the bundle metadata
(:mod:`pvdetect.model.bundle_meta`): :func:`first_error` turns a ``ValidationError`` into
``dotted.key: problem, got VALUE`` (``optim.lr: must be > 0, got -1.0``,
``data.band_order[1]: must be >= 0, got -1``, ``unknown option lr (did you mean optim.lr?);
valid options here: ...``). Rules that involve several fields raise :func:`rule_error` from a
model validator; their message names the keys from the top of the validated model.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

__all__ = ["RULE", "error_text", "first_error", "leaf_fields", "rule_error"]

#: the error type of cross-field rules (see :func:`rule_error`)
RULE = "pvdetect_rule"


def rule_error(text: str, *keys: str) -> PydanticCustomError:
    """A validation error of a cross-field rule, to raise from a model validator.

    Args:
        text: The whole message; ``{0}``, ``{1}``... stand for ``keys`` (the position of the
            model that raises the error is prefixed when reported).
        *keys: Dotted keys relative to that model.
    """
    ctx = {"message": text.format(*keys), "text": text, "keys": list(keys)}
    return PydanticCustomError(RULE, "{message}", ctx)


def _submodel(info: FieldInfo) -> type[BaseModel] | None:
    sub = info.annotation
    return sub if isinstance(sub, type) and issubclass(sub, BaseModel) else None


def leaf_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Dotted key and field of every leaf field (nested models expanded, in declaration order)."""
    for name, info in model.model_fields.items():
        sub = _submodel(info)
        if sub is not None:
            yield from leaf_fields(sub, f"{prefix}{name}.")
        else:
            yield prefix + name, info


def _dotted(loc: tuple[int | str, ...] | list[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _field_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[Any, FieldInfo | None]:
    """The model class holding ``loc``'s last part, and that field (None past lists or dicts)."""
    model: Any = root
    info = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in getattr(
            model, "model_fields", {}
        ):
            return model, None
        info = model.model_fields[str(part)]
        model = _submodel(info)
    return model, info


def _short_repr(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _range_text(error: ErrorDetails, info: FieldInfo | None) -> str:
    """``must be >= 1`` or, for a field bounded on both sides, ``must be in [0, 1)``."""
    lower = upper = None
    for m in info.metadata if info is not None else ():
        if isinstance(m, annotated_types.Ge | annotated_types.Gt):
            lower = m
        elif isinstance(m, annotated_types.Le | annotated_types.Lt):
            upper = m
    if lower is not None and upper is not None:
        lo = lower.ge if isinstance(lower, annotated_types.Ge) else lower.gt
        hi = upper.le if isinstance(upper, annotated_types.Le) else upper.lt
        closed = isinstance(lower, annotated_types.Ge) and isinstance(upper, annotated_types.Le)
        if closed and lo == hi:
            return f"must be {_num(lo)}"
        left = "[" if isinstance(lower, annotated_types.Ge) else "("
        right = "]" if isinstance(upper, annotated_types.Le) else ")"
        return f"must be in {left}{_num(lo)}, {_num(hi)}{right}"
    ctx = error.get("ctx", {})
    for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx:
            return f"must be {op} {_num(ctx[key])}"
    return error["msg"]  # pragma: no cover


_TYPE_TEXT = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping of options",
    "model_attributes_type": "expected a mapping of options",
    "string_too_short": "must not be empty",
    "missing": "missing (a required field)",
}


def _unknown_key(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """``unknown option optim.schedul (did you mean optim.schedule?); valid options here: ...``.

    A key that exists in another section (``lr`` at the top level) points there.
    """
    *where, key = loc
    model, _ = _field_at(root, tuple(where))
    names = list(model.model_fields) if model is not None else []
    prefix = _dotted(where) + "." if where else ""
    everywhere = [k for k, _ in leaf_fields(root)]
    elsewhere = [k for k in everywhere if k.rsplit(".", 1)[-1] == key and k != prefix + str(key)]
    close = difflib.get_close_matches(str(key), names, n=1)
    if elsewhere:
        hint = elsewhere[0]
    elif close:
        hint = prefix + close[0]
    else:
        leaves = {k.rsplit(".", 1)[-1]: k for k in everywhere}
        far = difflib.get_close_matches(str(key), list(leaves), n=1)
        hint = leaves[far[0]] if far else ""
    text = f"unknown option {prefix}{key}" + (f" (did you mean {hint}?)" if hint else "")
    return f"{text}; valid options here: {', '.join(names)}"


def error_text(error: ErrorDetails, root: type[BaseModel]) -> str:
    """One line for one pydantic error: ``dotted.key: problem, got VALUE``.

    Args:
        error: One entry of ``ValidationError.errors()``.
        root: The model that was validated (resolves sections, ranges and valid keys).
    """
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key(root, loc)
    if kind == RULE:
        ctx = error["ctx"]
        prefix = _dotted(loc) + "." if loc else ""
        return ctx["text"].format(*(prefix + k for k in ctx["keys"]))
    model, info = _field_at(root, loc)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        problem = _range_text(error, info)
    elif kind == "literal_error":
        problem = "must be " + error["ctx"]["expected"].replace("'", "")
    elif kind in ("dict_type", "model_type") and model is not None:
        problem = _TYPE_TEXT["model_type"]
    elif kind == "too_short" and info is not None:
        problem = "must not be empty"
    else:
        problem = _TYPE_TEXT.get(kind, error["msg"][:1].lower() + error["msg"][1:])
    got = "" if kind == "missing" else f", got {_short_repr(error['input'])}"
    return f"{_dotted(loc)}: {problem}{got}"


def first_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """The message of the error to report: unknown keys first, then in field order."""
    errors = exc.errors()
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    return error_text(errors[0], root).replace("\n", " ")
