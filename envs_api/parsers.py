"""Lenient request parsing: clients label their bodies in every way there is."""

from __future__ import annotations

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
            raise ParseError("Request is not a valid json") from None
        return {} if data is None else data
