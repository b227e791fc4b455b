"""Request targets to routes: `/users/123?x=1` and `/users/456` both become `/users/{id}`.

A route (http.route) is what endpoints are grouped by, so it must have few distinct values per
service: every id in a path would otherwise make its own endpoint, its own rollup rows and its own
line in the UI. It must also carry nothing private, which is why the query is dropped entirely
and long opaque segments (tokens, hashes) are masked with the ids.
"""

import re

ID = "{id}"
REST = "{rest}"
MAX_SEGMENTS = 8  # deeper paths are almost always file trees or encoded data, not API routes
MAX_ROUTE_CHARS = 200  # a route is a grouping key and a table cell, not a copy of the URL

_DIGITS = re.compile(r"[0-9]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A digit is required so that words spelled in hex letters ("deadbeef", "facade") stay.
_HEX_ID = re.compile(r"(?=[a-fA-F]*[0-9])[0-9a-fA-F]{8,}")
# Letters and digits both, so that long plain words and slugs ("getting-started-with-obsweb") stay.
_OPAQUE_TOKEN = re.compile(r"(?=[0-9_\-]*[A-Za-z])(?=[A-Za-z_\-]*[0-9])[A-Za-z0-9_\-]{20,}")
_SCHEME_AND_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/]*")


def looks_like_id(segment: str) -> bool:
    """True for a number, UUID, hex id or long opaque token: a value, not a name."""
    return any(p.fullmatch(segment) for p in (_DIGITS, _UUID, _HEX_ID, _OPAQUE_TOKEN))


def normalize_route(target: str) -> str:
    """The route of a request target: path only, ids replaced by {id}, bounded in depth and length.

    `*` (OPTIONS *) stays `*`; an empty target is `/`; an absolute-form target
    (`http://host/path`, sent to proxies) counts by its path alone.
    """
    if not isinstance(target, str):
        return "/"
    path = target.split("#", 1)[0].split("?", 1)[0]
    if path == "*":
        return "*"
    absolute = _SCHEME_AND_AUTHORITY.match(path)
    if absolute:
        path = path[absolute.end() :]
    segments = [ID if looks_like_id(s) else s for s in path.split("/") if s]
    route = "/" + "/".join(segments)
    if len(segments) <= MAX_SEGMENTS and len(route) <= MAX_ROUTE_CHARS:
        # Keep a trailing slash: many frameworks route "/users/" and "/users" differently.
        trailing = "/" if segments and path.endswith("/") and len(route) < MAX_ROUTE_CHARS else ""
        return route + trailing
    return _shorten(segments)


def _shorten(segments: list[str]) -> str:
    """The leading segments that fit, then /{rest} to show the route was cut."""
    budget = MAX_ROUTE_CHARS - len("/" + REST)
    kept, size = [], 0
    for segment in segments[:MAX_SEGMENTS]:
        if size + 1 + len(segment) > budget:
            break
        kept.append(segment)
        size += 1 + len(segment)
    if not kept:
        kept = [segments[0][: budget - 1]]  # one huge first segment: keep its start
    return "/" + "/".join(kept) + "/" + REST
