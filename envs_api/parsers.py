"""Lenient request parsing: clients label their bodies in every way there is."""

from __future__ import annotations

import json
from typing import Any

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser


class LenientJSONParser(BaseParser):
    """Parse any body as JSON whatever its Content-Type; empty or ``null`` -> ``{}``."""

    media_type = "*/*"

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        body = stream.read() if stream is not None else b""
        if not body.strip():
            return {}
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = _slow_loads(body)
        return {} if data is None else data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _slow_loads(body: bytes) -> Any:
    """The standard library's parser, for what orjson refuses but JSON allows.

    orjson stops at 64-bit integers; JSON itself has no limit (a u64 seed plus one
    should get "seed: ..." rather than "not a valid json"). NaN and Infinity stay out.
    """
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise ParseError("Request is not a valid json") from None
