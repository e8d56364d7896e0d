"""The one URL-state codec of the app: a tab's meaningful settings to and from query parameters.

A tab lists its fields (parameter name, query key, optionally a clamp that knows today's bounds,
such as the length of the open recording). Encoding writes the values that differ from the
defaults; decoding parses every value by the parameter's type, clamps numbers to their bounds,
keeps only known choices, and returns a message for each value it changed or ignored, so that a
hand-edited or stale link never stops a tab. Fields are applied in the order given (a source before
its session, a session before its units). Panel is not imported: the view reads and writes the
browser's location; this module only maps values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import param

#: a value longer than this is ignored (a link is not a way to upload data)
MAX_VALUE_CHARS = 2000


class UrlValueError(ValueError):
    """A query value that cannot be used (the message says which key and why)."""


@dataclass(frozen=True)
class UrlField:
    """``param`` of the controller, written as ``key`` in the URL. ``clamp(controller, value)``
    returns the value to use (or raises UrlValueError) for bounds that change at run time."""

    param: str
    key: str
    clamp: Callable[[Any, Any], Any] | None = None


def _as_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _parse_number(text: Any, key: str) -> float:
    if isinstance(text, bool):
        raise UrlValueError(f"{key}={text!r} is not a number")
    if isinstance(text, (int, float)):
        x = float(text)
    else:
        try:
            x = float(str(text).strip())
        except (TypeError, ValueError, OverflowError):
            raise UrlValueError(f"{key}={str(text)[:40]!r} is not a number") from None
    if not math.isfinite(x):
        raise UrlValueError(f"{key}={str(text)[:40]!r} is not a finite number")
    return x


def _parse_list(text: Any) -> list[str]:
    """A list as this codec writes it (``a,b``), as JSON, or as Panel writes it (``['a', 'b']``)."""
    if isinstance(text, (list, tuple)):
        return [str(v) for v in text]
    s = str(text).strip()
    if not s:
        return []
    if s.startswith("["):
        try:
            value = json.loads(s)
            if isinstance(value, list):
                return [str(v) for v in value]
        except ValueError:
            inner = [x.strip() for x in s[1:-1].split(",") if x.strip()] if s.endswith("]") else []
            if inner and all(len(x) >= 2 and x[0] == x[-1] and x[0] in "'\"" for x in inner):
                return [x[1:-1] for x in inner]
    return [x.strip() for x in s.split(",") if x.strip()]


def _choice(p: param.Parameter, raw: Any, key: str) -> Any:
    options = list(p.objects) if not isinstance(p.objects, dict) else list(p.objects.values())
    for o in options:
        if o == raw or str(o) == str(raw):
            return o
    names = getattr(p, "names", None) or {}
    if str(raw) in names:
        return names[str(raw)]
    raise UrlValueError(f"{key}={str(raw)[:60]!r} is not one of the choices")


def _clamp_bounds(p: param.Parameter, x: float, key: str, messages: list[str]) -> float:
    lo, hi = p.bounds if p.bounds is not None else (None, None)
    if lo is not None and x < lo:
        messages.append(f"{key}={x:g} is below {lo:g}; using {lo:g}")
        return lo
    if hi is not None and x > hi:
        messages.append(f"{key}={x:g} is above {hi:g}; using {hi:g}")
        return hi
    return x


def decode_value(p: param.Parameter, raw: Any, key: str, messages: list[str]) -> Any:
    """The value of parameter ``p`` for the query value ``raw`` (see module docstring)."""
    if isinstance(raw, str) and len(raw) > MAX_VALUE_CHARS:
        raise UrlValueError(f"{key} is longer than {MAX_VALUE_CHARS} characters")
    if isinstance(p, param.Boolean):
        s = str(raw).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise UrlValueError(f"{key}={str(raw)[:40]!r} is not true or false")
    if isinstance(p, param.ListSelector):
        items = _parse_list(raw)
        out, bad = [], []
        for item in items:
            try:
                out.append(_choice(p, item, key))
            except UrlValueError:
                bad.append(item)
        if bad:
            messages.append(f"{key}: ignored unknown {', '.join(repr(b[:40]) for b in bad[:5])}")
        return out
    if isinstance(p, param.Selector):
        return _choice(p, raw, key)
    if isinstance(p, param.Integer):
        x = _parse_number(raw, key)
        if x != round(x):
            messages.append(f"{key}={x:g} is not a whole number; using {round(x)}")
        return int(_clamp_bounds(p, round(x), key, messages))
    if isinstance(p, param.Number):
        return float(_clamp_bounds(p, _parse_number(raw, key), key, messages))
    if isinstance(p, (param.Range, param.NumericTuple)):
        parts = _parse_list(raw)
        if len(parts) != p.length:
            raise UrlValueError(f"{key}={str(raw)[:40]!r} needs {p.length} numbers")
        return tuple(_parse_number(v, key) for v in parts)
    if isinstance(p, param.String):
        return str(raw)
    raise UrlValueError(f"{key}: parameters of type {type(p).__name__} are not kept in links")


def encode_value(p: param.Parameter, value: Any) -> str:
    if isinstance(p, param.Boolean):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
        return json.dumps(items) if any("," in v for v in items) else ",".join(items)
    if isinstance(value, float):
        return repr(value) if value != int(value) or abs(value) >= 1e16 else str(int(value))
    return str(value)


class UrlState:
    """The fields of one tab (see module docstring)."""

    def __init__(self, fields: Sequence[UrlField | tuple[str, str]]):
        self.fields = tuple(f if isinstance(f, UrlField) else UrlField(*f) for f in fields)
        keys = [f.key for f in self.fields]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate URL keys: {keys}")

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields)

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(f.param for f in self.fields)

    def encode(self, obj: param.Parameterized) -> dict[str, str]:
        """``{key: text}`` of the fields whose values differ from their defaults."""
        out = {}
        for f in self.fields:
            p = obj.param[f.param]
            value = getattr(obj, f.param)
            if value == p.default or (value in (None, [], "") and p.default in (None, [], "")):
                continue
            out[f.key] = encode_value(p, value)
        return out

    def apply(self, obj: param.Parameterized, query: Mapping[str, Any]) -> list[str]:
        """Set the fields present in ``query`` on ``obj`` in order; returns one message for each value
        that was changed (clamped, partly unknown) or ignored. Never raises for a bad value."""
        messages: list[str] = []
        for f in self.fields:
            if f.key not in query:
                continue
            raw = query[f.key]
            if isinstance(raw, list) and len(raw) == 1 and not isinstance(obj.param[f.param], param.ListSelector):
                raw = raw[0]
            try:
                value = decode_value(obj.param[f.param], raw, f.key, messages)
                if f.clamp is not None:
                    value = f.clamp(obj, value)
                setattr(obj, f.param, value)
            except UrlValueError as exc:
                messages.append(f"{exc}; ignored")
            except (ValueError, TypeError) as exc:  # param refused it (bounds changed meanwhile)
                messages.append(f"{f.key}={_as_text(raw)[:40]!r} ignored: {str(exc)[:120]}")
        return messages

    def merge_into(self, query: Mapping[str, str], obj: param.Parameterized) -> dict[str, str]:
        """``query`` with this tab's keys replaced by the current values (other tabs' keys kept)."""
        out = {k: v for k, v in query.items() if k not in self.keys}
        out.update(self.encode(obj))
        return out
