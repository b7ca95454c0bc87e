"""OpenAPI tweaks: spell each path exactly as the protocol does."""

from __future__ import annotations

from typing import Any

# The three v1 routes that have no trailing slash (the router accepts both spellings).
SLASHLESS = (
    "/action_space/sample/",
    "/action_space/contains/{x}/",
    "/observation_space/contains/",
)


def protocol_paths(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the protocol's spellings and media type.

    The router's ``/?`` regex reads as a trailing slash, and the lenient parser's
    ``*/*`` as the request type; clients are documented to send JSON.
    """
    paths = result.get("paths", {})
    result["paths"] = {
        (path[:-1] if path.endswith(SLASHLESS) else path): item
        for path, item in paths.items()
    }
    for item in result["paths"].values():
        for operation in item.values():
            content = operation.get("requestBody", {}).get("content", {})
            if "*/*" in content:
                content["application/json"] = content.pop("*/*")
    return result
