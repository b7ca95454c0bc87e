"""Lenient request parsing: clients label their bodies in every way there is."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from envs_api import protocol
from envs_api.runtime import codecs
from envs_api.runtime.errors import UsageError


class LenientJSONParser(BaseParser):
    """Parse any body as JSON whatever its Content-Type (``protocol.loads``)."""

    media_type = "*/*"

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        return protocol.loads(stream.read() if stream is not None else b"")


class MalformedBody(ParseError, UsageError):
    """A body its parser cannot read: a ParseError that keeps its message.

    It is a UsageError too, so ``api_exception_handler`` answers 400 with this text
    rather than the JSON parser's "Request is not a valid json".
    """

    def __init__(self, message: str) -> None:
        ParseError.__init__(self, message)
        UsageError.__init__(self, message)


class MsgpackParser(BaseParser):
    """application/msgpack bodies (``codecs.unpackb``); empty or nil is ``{}``, as JSON.

    List it before LenientJSONParser, whose ``*/*`` matches every Content-Type.
    """

    media_type = "application/msgpack"

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        body = stream.read() if stream is not None else b""
        if not body:
            return {}
        try:
            data = codecs.unpackb(body)
        except codecs.MalformedMsgpack as exc:
            raise MalformedBody(exc.message) from None
        return {} if data is None else data
