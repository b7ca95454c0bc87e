"""A fast renderer of strict JSON (RFC 8259): orjson never writes NaN or Infinity."""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.renderers import BaseRenderer


def _fallback(obj: Any) -> Any:
    """Render lazy strings, Decimals and the like as text rather than failing."""
    return str(obj)


class StrictJSONRenderer(BaseRenderer):
    """application/json via orjson; a stray non-finite float becomes null."""

    media_type = "application/json"
    format = "json"
    charset = None  # JSON is UTF-8 by definition

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Any = None,
    ) -> bytes:
        if data is None:
            return b""
        option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
        if renderer_context and renderer_context.get("indent"):
            option |= orjson.OPT_INDENT_2
        return orjson.dumps(data, default=_fallback, option=option)
