"""Compact JSON exactly as openai-harmony prints a tool schema's `default`: serde_json 1.0.140 and ryu.

openai-harmony receives a schema as Python's `json.dumps` text, reads it with serde_json (without its
`float_roundtrip` feature) and prints values back with serde_json's compact writer. Two things differ from
Python's own json:

- a number is read back the way serde_json reads it: integers up to u64 (or down to i64) stay integers; any
  other number becomes a float computed as `significand * 10**exponent` in float64, digits past 19 or 20
  dropped, so a float with 17 significant digits may come back one ulp off (serde_json's documented
  best-effort precision);
- a float is printed in ryu's shortest form: `1e20`, `1e-7`, `0.00001`, `5.0`, `1.5e300`.

Only the standard library here.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

_U64_MAX = 2**64 - 1
_POW10 = [float(f"1e{i}") for i in range(309)]  # serde_json's POW10 table


class JsonNumberError(ValueError):
    """A number openai-harmony's JSON reader refuses (NaN, infinite, or out of float64's range)."""


def dumps(value: Any) -> str:
    """`value` (a JSON-like Python value) as openai-harmony prints it; JsonNumberError or TypeError if it
    has no such text."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # the same escapes as serde_json's
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{dumps(_key(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"{type(value).__name__} {value!r} is not a JSON value")


def _key(key: Any) -> str:
    """A dict key as json.dumps writes it."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return dumps(key)
    if isinstance(key, (int, float)):
        return float.__repr__(key) if isinstance(key, float) else int.__repr__(key)
    raise TypeError(f"a JSON object key must be a string or a number, got {type(key).__name__} {key!r}")


def _number(value: int | float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise JsonNumberError(f"{value!r} is not a JSON number")
    text = float.__repr__(value) if isinstance(value, float) else int.__repr__(value)
    parsed = read_number(text)
    return str(parsed) if isinstance(parsed, int) else ryu(parsed)


# ---------------------------------------------------------------------------------------------
# serde_json's number reader (src/de.rs: parse_integer, parse_decimal, parse_exponent, f64_from_parts)
# ---------------------------------------------------------------------------------------------


def _overflows(significand: int, digit: int) -> bool:
    return significand >= _U64_MAX // 10 and (significand > _U64_MAX // 10 or digit > _U64_MAX % 10)


def read_number(text: str) -> int | float:
    """The number serde_json reads from the JSON number `text` (as Python's json writes numbers)."""
    if text in ("NaN", "Infinity", "-Infinity"):
        raise JsonNumberError(f"{text} is not a JSON number")
    positive = not text.startswith("-")
    s = text if positive else text[1:]
    i, n = 0, len(s)
    significand = exponent = 0
    is_float = False
    while i < n and s[i].isdigit():  # integer part; past u64, the remaining digits only scale
        digit = ord(s[i]) - 48
        if _overflows(significand, digit):
            while i < n and s[i].isdigit():
                exponent, i = exponent + 1, i + 1
            is_float = True
            break
        significand, i = significand * 10 + digit, i + 1
    if i < n and s[i] == ".":
        i, is_float = i + 1, True
        while i < n and s[i].isdigit():
            digit = ord(s[i]) - 48
            if _overflows(significand, digit):  # the rest of the fraction is dropped
                while i < n and s[i].isdigit():
                    i += 1
                break
            significand, exponent, i = significand * 10 + digit, exponent - 1, i + 1
    if i < n and s[i] in "eE":
        i, is_float = i + 1, True
        sign = -1 if s[i] == "-" else 1
        exponent += sign * int(s[i + 1:] if s[i] in "+-" else s[i:])
    if not is_float:
        if positive:
            return significand
        return -significand if 0 < significand <= 2**63 else -float(significand)
    return _f64_from_parts(positive, significand, exponent, text)


def _f64_from_parts(positive: bool, significand: int, exponent: int, text: str) -> float:
    f = float(significand)
    while True:
        if abs(exponent) < len(_POW10):
            if exponent >= 0:
                f *= _POW10[exponent]
                if f == float("inf"):
                    raise JsonNumberError(f"{text} is out of float64's range")
            else:
                f /= _POW10[-exponent]
            break
        if f == 0.0:
            break
        if exponent >= 0:
            raise JsonNumberError(f"{text} is out of float64's range")
        f /= 1e308
        exponent += 308
    return f if positive else -f


# ---------------------------------------------------------------------------------------------
# ryu's shortest float text (ryu/src/pretty/mod.rs: format64)
# ---------------------------------------------------------------------------------------------


def ryu(x: float) -> str:
    """The shortest text that reads back as `x`, laid out as ryu lays it out (Python's repr has the same
    digits, laid out differently: 1e+20, 1e-07, 1e-05)."""
    sign = "-" if x < 0 or (x == 0 and str(x).startswith("-")) else ""
    mantissa, _, exp = float.__repr__(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    if not digits:
        return f"{sign}0.0"
    k = int(exp or 0) - len(frac)  # abs(x) == digits * 10**k
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits, length = stripped, len(stripped)
    kk = length + k  # 10**(kk-1) <= abs(x) < 10**kk
    if 0 <= k and kk <= 16:
        body = f"{digits}{'0' * k}.0"
    elif 0 < kk <= 16:
        body = f"{digits[:kk]}.{digits[kk:]}"
    elif -5 < kk <= 0:
        body = f"0.{'0' * -kk}{digits}"
    elif length == 1:
        body = f"{digits}e{kk - 1}"
    else:
        body = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + body
