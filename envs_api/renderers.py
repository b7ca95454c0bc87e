"""Answers: strict JSON through ``protocol.dumps``, and JSON whatever the Accept.

v2 also answers msgpack (``MsgpackRenderer``), exactly when Accept asks for it
(``V2Negotiation``).
"""

from __future__ import annotations

from typing import Any

import orjson
from django.http import Http404
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer

from envs_api import protocol
from envs_api.runtime import codecs


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


class MsgpackRenderer(BaseRenderer):
    """application/msgpack (docs/v2.md "Encodings"): data already in wire form."""

    media_type = "application/msgpack"
    format = "msgpack"
    charset = None
    render_style = "binary"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Any = None,
    ) -> bytes:
        return b"" if data is None else codecs.packb(data)


class V2Negotiation(JSONUnlessAsked):
    """msgpack exactly when the Accept header asks for it, else as JSONUnlessAsked.

    DRF alone would answer msgpack to ``application/msgpack;q=0``, and JSON to
    ``application/msgpack, application/json`` (renderer order breaks ties). Here the
    answer is msgpack when Accept names ``application/msgpack`` with a q above 0 and
    no higher q for ``application/json``, or the query says ``?format=msgpack`` (the
    schema's ``format`` parameter); anything else (no Accept, ``*/*``,
    ``text/plain``, another ``?format=``) gets the first other renderer that DRF
    picks, and JSON when it picks none.
    """

    def select_renderer(
        self, request: Any, renderers: list[Any], format_suffix: str | None = None
    ) -> tuple[Any, str]:
        binary = [r for r in renderers if isinstance(r, MsgpackRenderer)]
        asked = request.query_params.get("format")  # ?format=msgpack, as documented
        if binary and (
            asked == "msgpack" or wants_msgpack(request.headers.get("accept", ""))
        ):
            return binary[0], binary[0].media_type
        others = [r for r in renderers if not isinstance(r, MsgpackRenderer)]
        try:
            return super().select_renderer(request, others, format_suffix)
        except Http404:  # ?format=<none of ours>: the contract says JSON
            return others[0], others[0].media_type


def wants_msgpack(accept: str) -> bool:
    """Whether an Accept header ranks ``application/msgpack`` above 0 and JSON."""
    ranks: dict[str, float] = {}
    for item in accept.split(",")[:64]:  # DRF's bound on Accept tokens
        kind, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        kind = kind.lower()
        ranks[kind] = max(ranks.get(kind, 0.0), q)
    binary = ranks.get("application/msgpack", 0.0)
    return binary > 0 and binary >= ranks.get("application/json", 0.0)
