"""Lenient request parsing: clients label their bodies in every way there is."""

from __future__ import annotations

from typing import Any

from rest_framework.parsers import BaseParser

from envs_api import protocol


class LenientJSONParser(BaseParser):
    """Parse any body as JSON whatever its Content-Type (``protocol.loads``)."""

    media_type = "*/*"

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        return protocol.loads(stream.read() if stream is not None else b"")
