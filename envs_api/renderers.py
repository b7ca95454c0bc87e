"""Answers: strict JSON through ``protocol.dumps``, and JSON whatever the Accept."""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer

from envs_api import protocol


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
        if renderer_context and renderer_context.get("indent"):
            return orjson.dumps(
                data,
                default=str,
                option=orjson.OPT_SERIALIZE_NUMPY
                | orjson.OPT_NON_STR_KEYS
                | orjson.OPT_INDENT_2,
            )
        return protocol.dumps(data)


class JSONUnlessAsked(DefaultContentNegotiation):
    """The protocol answers JSON: an Accept header nothing matches gets JSON, not 406.

    Old clients send ``Accept: text/plain`` or odd lists; the seed ignored Accept.
    A browser asking for HTML still gets the browsable API, and ``?format=api`` too.
    """

    def select_renderer(
        self, request: Any, renderers: list[Any], format_suffix: str | None = None
    ) -> tuple[Any, str]:
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type
