"""A tiny JSON client for Weir's HTTP API (urllib only, no extra package)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request


class Response:
    """Status, headers and body of one answer; `.json()` parses the body."""

    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.body[:300]!r}>"


class Http:
    """Calls `base_url` + path; never raises for 4xx/5xx (tests check them)."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")

    def call(self, method: str, path: str, body=None, raw: bytes | None = None, timeout: float = 30.0) -> Response:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return Response(answer.status, answer.headers, answer.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.headers, error.read())

    def get(self, path: str, **kwargs) -> Response:
        return self.call("GET", path, **kwargs)

    def ok(self, method: str, path: str, body=None, status: int = 200):
        """Calls and asserts the status; returns the parsed body (or None)."""
        answer = self.call(method, path, body)
        assert answer.status == status, f"{method} {path}: {answer!r}"
        return answer.json() if answer.body else None


def q(name: str) -> str:
    """A path segment, URL-encoded (`/` becomes %2F)."""
    return urllib.parse.quote(name, safe="")
