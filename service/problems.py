"""The one exception every expected failure is raised as; service/errors.py renders it as problem+json.

Kept free of the web framework so that the image, admission and ONNX layers can raise it without importing it.
"""

from __future__ import annotations


class ProblemError(Exception):
    """An expected failure with a known status; raised anywhere, rendered by the handler in service/errors.py."""

    def __init__(self, status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail, self.headers = status, slug, title, detail, headers
