"""Type and range checks for option values from the command line, TOML files and `--param` strings.

Each bad value is one line naming the option: a string where a number belongs, inf, NaN, or an
integer too big for the 64-bit code below it (1e999, a 5,000-digit literal), instead of a
traceback somewhere deep in a stage.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from tselect.errors import UserError

INT_LIMIT = 2**63 - 1  # what numpy/torch index and seed arithmetic holds


def check_number(name: str, value: Any, where: str, allow_inf: bool = False) -> None:
    """A finite float (or ±inf where the option documents it, e.g. uot's reg_m1), or an int within
    ±INT_LIMIT (bools are not numbers here)."""
    if isinstance(value, bool):
        return
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value) and not allow_inf):
        raise UserError(f"{where}: {name} = {value} is not a finite number; give a finite value")
    if isinstance(value, int) and abs(value) > INT_LIMIT:
        raise UserError(f"{where}: {name} has {len(str(abs(value)))} digits, more than a 64-bit integer holds; "
                        "give a smaller value")


def parse_number(name: str, raw: str, kind: type, where: str, allow_inf: bool = False) -> int | float:
    """`raw` ('12', '1e3', '0.5') as an int or float, checked by check_number."""
    text = str(raw).strip()
    if len(text) > 400:
        raise UserError(f"{where}={text[:20]}... is {len(text)} digits long; give a plain number")
    try:
        value = float(text) if kind is float else _to_int(text)
    except (ValueError, OverflowError):
        what = "an integer" if kind is int else "a number"
        raise UserError(f"{where}={text} must be {what} (a finite one that fits 64 bits)") from None
    check_number(name, value, where, allow_inf)
    return value


def _to_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        f = float(text)  # '1e3' → 1000; '1e999' → inf (OverflowError below)
        if not f.is_integer():
            raise
        return int(f)


def check_config_values(cls: type, values: dict[str, Any], where: str) -> None:
    """Each value given for dataclass `cls` has its field's type (int, float, str, bool, tuples of those)
    and every number is finite and fits 64 bits. Unknown names are left to `cls(**values)`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for name, value in values.items():
        if name in names:
            _check_value(name, value, hints[name], where)


def _check_value(name: str, value: Any, hint: Any, where: str) -> None:
    if isinstance(value, (int, float)):
        check_number(name, value, where)
    allowed = _allowed(hint)
    if allowed is None or value is None and type(None) in allowed:
        return
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if isinstance(value, int) and not isinstance(value, bool) and float in allowed:
        ok = True
    if not ok:
        names = " or ".join(sorted({t.__name__ for t in allowed if t is not type(None)}))
        raise UserError(f"{where}: {name} must be {names}, got {type(value).__name__} {str(value)[:40]!r}")
    if isinstance(value, tuple):
        for item in value:
            if isinstance(item, (int, float)):
                check_number(name, item, where)


def _allowed(hint: Any) -> tuple[type, ...] | None:
    """The runtime types a field annotation admits, or None when it is not a simple one."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_allowed(a) for a in typing.get_args(hint)]
        return None if any(p is None for p in parts) else tuple(t for p in parts for t in p)
    if origin is tuple:
        return (tuple, list)
    if hint is type(None):
        return (type(None),)
    if hint in (int, float, str, bool):
        return (hint,)
    return None
