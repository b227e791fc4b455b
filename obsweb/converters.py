"""URL converters shared by the dashboard's and the API's routes."""

from django.urls import converters, register_converter


class CapturedText(converters.PathConverter):
    """A service or host name or a trace id as captured: any text, "/" and line breaks too.
    Django's `path` stops at a line break, and {% url %} fails on a name it cannot match: one
    service named so (a process may call itself anything) would fail every page linking to it."""

    regex = "(?s:.+)"


register_converter(CapturedText, "captured")
