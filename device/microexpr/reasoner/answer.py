"""One attempt at the API: send, classify the outcome, validate the answer.

Every way an attempt can go wrong becomes an :class:`AttemptFailed` with a
:class:`FailureKind`; the worker decides what to do from the kind alone
(back off and retry, count it against the episode, open the breaker). Nothing
the server sends can raise anything else out of :func:`ask`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jsonschema
import openai

from microexpr.facs import AU, Emotion
from microexpr.reasoner.prompt import response_schema
from microexpr.reasoner.request import ReasonerRequest

log = logging.getLogger(__name__)

#: Longest rationale kept (characters): it goes into an MQTT payload.
RATIONALE_MAX = 1000


class FailureKind(StrEnum):
    RATE_LIMITED = "rate_limited"  #: HTTP 429
    SERVER_ERROR = "server_error"  #: HTTP 5xx
    TIMEOUT = "timeout"
    CONNECTION = "connection"  #: refused, reset, DNS
    AUTH = "auth"  #: 401/403: wrong or revoked key
    BAD_REQUEST = "bad_request"  #: other 4xx: the server rejects what we send
    MALFORMED = "malformed"  #: not JSON, wrong shape, missing fields
    OUT_OF_SET = "out_of_set"  #: a label outside the closed set / AU not in evidence
    REFUSED = "refused"  #: message.refusal
    TRUNCATED = "truncated"  #: finish_reason "length" or "content_filter"

    @property
    def transient(self) -> bool:
        """The service, not this episode, is at fault: retry later without
        counting it against the episode (the queue waits, nothing dropped)."""
        return self in _TRANSIENT


_TRANSIENT = {
    FailureKind.RATE_LIMITED,
    FailureKind.SERVER_ERROR,
    FailureKind.TIMEOUT,
    FailureKind.CONNECTION,
    FailureKind.AUTH,
}


class AttemptFailed(Exception):
    """An attempt that produced no usable answer."""

    def __init__(
        self,
        kind: FailureKind,
        detail: str,
        *,
        retry_after_s: float | None = None,
        tokens: int | None = None,
        billed: bool = False,
    ) -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s
        #: Tokens the server reported for this attempt (None when unknown).
        self.tokens = tokens
        #: Whether the attempt may have been billed although it failed
        #: (the server produced a completion, or we timed out waiting).
        self.billed = billed


@dataclass(frozen=True, slots=True)
class Answer:
    label: Emotion
    confidence: float
    rationale: str
    aus_cited: tuple[AU, ...]
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str  #: as reported by the server

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return self.prompt_tokens + self.completion_tokens


def ask(client: openai.OpenAI, request: ReasonerRequest, body: dict[str, Any]) -> Answer:
    """Send ``body`` (from :func:`prompt.request_body`) and validate the answer."""
    try:
        completion = client.chat.completions.create(**body)
    except openai.APITimeoutError as exc:
        raise AttemptFailed(FailureKind.TIMEOUT, str(exc), billed=True) from exc
    except openai.APIConnectionError as exc:
        raise AttemptFailed(FailureKind.CONNECTION, str(exc)) from exc
    except openai.APIStatusError as exc:
        raise _status_failure(exc) from exc
    except openai.OpenAIError as exc:
        raise AttemptFailed(FailureKind.MALFORMED, f"{type(exc).__name__}: {exc}") from exc
    except ValueError as exc:  # a 200 whose body is not JSON (a broken proxy)
        raise AttemptFailed(FailureKind.MALFORMED, f"response body is not JSON: {exc}") from exc
    return validate(completion, request)


def validate(completion: Any, request: ReasonerRequest) -> Answer:
    """Turn a ChatCompletion into an :class:`Answer` or raise AttemptFailed."""
    usage = getattr(completion, "usage", None)
    prompt_tokens = getattr(usage, "prompt_tokens", None)
    completion_tokens = getattr(usage, "completion_tokens", None)
    tokens = None if usage is None else getattr(usage, "total_tokens", None)

    def fail(kind: FailureKind, detail: str) -> AttemptFailed:
        return AttemptFailed(kind, detail, tokens=tokens, billed=True)

    choices = getattr(completion, "choices", None) or []
    if not choices:
        raise fail(FailureKind.MALFORMED, "no choices in the response")
    choice = choices[0]
    message = getattr(choice, "message", None)
    if message is None:
        raise fail(FailureKind.MALFORMED, "choice without a message")
    refusal = getattr(message, "refusal", None)
    if refusal:
        raise fail(FailureKind.REFUSED, _clip(str(refusal), 200))
    finish = getattr(choice, "finish_reason", None)
    if finish in ("length", "content_filter"):
        raise fail(FailureKind.TRUNCATED, f"finish_reason {finish}")
    content = getattr(message, "content", None)
    if not content:
        raise fail(FailureKind.MALFORMED, "empty message content")
    try:
        data = _normalised(json.loads(_unfenced(content)))
    except ValueError:
        raise fail(FailureKind.MALFORMED, f"content is not JSON: {_clip(content, 80)!r}") from None
    schema = response_schema(request)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        kind = FailureKind.OUT_OF_SET if first.validator == "enum" else FailureKind.MALFORMED
        raise fail(kind, f"{where}: {_clip(first.message, 160)}")
    model = getattr(completion, "model", None) or ""
    return Answer(
        label=Emotion(data["label"]),
        confidence=float(data["confidence"]),
        rationale=_clip(data["rationale"].strip(), RATIONALE_MAX),
        aus_cited=tuple(dict.fromkeys(AU(int(code[2:])) for code in data["aus_cited"])),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        model=str(model),
    )


def _unfenced(content: str) -> str:
    """Servers without JSON mode often wrap the object in a Markdown fence."""
    text = content.strip()
    if text.startswith("```") and text.endswith("```") and "\n" in text:
        text = text[text.index("\n") + 1 : -3].strip()
    return text


def _normalised(data: Any) -> Any:
    """Case and spacing are not worth a failed attempt: " Fear" is fear and
    "au4" is AU4. Anything else is left for the schema to judge."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    if isinstance(out.get("label"), str):
        out["label"] = out["label"].strip().lower()
    cited = out.get("aus_cited")
    if isinstance(cited, list):
        out["aus_cited"] = [c.strip().upper().replace(" ", "") if isinstance(c, str) else c for c in cited]
    return out


def _status_failure(exc: openai.APIStatusError) -> AttemptFailed:
    status = exc.status_code
    retry_after = retry_after_seconds(exc.response.headers if exc.response is not None else {})
    detail = f"HTTP {status}: {_clip(str(getattr(exc, 'message', exc)), 160)}"
    if status == 429:
        return AttemptFailed(FailureKind.RATE_LIMITED, detail, retry_after_s=retry_after)
    if status >= 500 or status in (408, 409):
        return AttemptFailed(FailureKind.SERVER_ERROR, detail, retry_after_s=retry_after)
    if status in (401, 403):
        return AttemptFailed(FailureKind.AUTH, detail)
    return AttemptFailed(FailureKind.BAD_REQUEST, detail)


def retry_after_seconds(headers: Any, *, now: float | None = None) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (delta
    seconds or an HTTP date); None when absent or unreadable."""
    get = headers.get if hasattr(headers, "get") else dict(headers).get
    ms = get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        log.debug("unreadable Retry-After header %r", value)
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
