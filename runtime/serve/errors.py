"""OpenAI-style errors: every refusal the server makes is one of these, answered as

    {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": null}}

with its HTTP status. Status by cause (docs/serving.md):

    400  the body is not JSON, or a field has the wrong shape (messages, tools, roles)
    401  a missing or wrong bearer token (--api-key)
    404  an unknown model or route
    413  the prompt does not fit in the context, or the body is too large
    422  a well-formed value out of range (temperature, top_p, max_tokens, reasoning_effort, a tool schema)
    429  the queue is full (with Retry-After)
    503  the server is shutting down
"""

from __future__ import annotations

from gptoss.errors import GptOssError


class APIError(GptOssError):
    """A request the server refuses; `status` is the HTTP status, the rest goes into the error JSON."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def malformed(message: str, param: str | None = None) -> APIError:
    """400: a field is missing or has the wrong shape."""
    return APIError(400, message, param=param)


def invalid_value(message: str, param: str | None = None) -> APIError:
    """422: a well-formed field with a value the server cannot use."""
    return APIError(422, message, param=param, code="invalid_value")


def unsupported(param: str, what: str) -> APIError:
    """400: a parameter this server does not implement, set to something other than its default."""
    return APIError(400, f"{param}: {what} is not supported by this server", param=param, code="unsupported_parameter")
