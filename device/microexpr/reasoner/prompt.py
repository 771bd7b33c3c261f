"""The prompt and the response schema, rendered from a versioned template.

The template is package data (``data/reasoner_prompt.v1.txt``): wording
changes are reviewed as text, and the version is part of each cached answer's
key so a new prompt never reuses answers to the old one. Rendering is a pure
function of the request, so the same evidence always produces the same
bytes on the wire (with temperature 0 that is as deterministic as the API
allows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from string import Template
from typing import Any

from microexpr.errors import DataError
from microexpr.facs import AU, Emotion, Side
from microexpr.reasoner.request import AUEvidence, ReasonerRequest

PROMPT_VERSION = "v1"
SCHEMA_NAME = "micro_expression_label"

#: Short appearance descriptions (our wording, after the FACS manual's
#: definitions) for the AUs the estimator can report. Others fall back to
#: their FACS name.
AU_APPEARANCE: dict[AU, str] = {
    AU.INNER_BROW_RAISER: "the inner ends of the brows rise",
    AU.OUTER_BROW_RAISER: "the outer ends of the brows rise",
    AU.BROW_LOWERER: "the brows are pulled down and together, creasing between them",
    AU.UPPER_LID_RAISER: "the upper eyelids rise and the eyes widen",
    AU.CHEEK_RAISER: "the cheeks lift and crow's-feet wrinkles form at the eye corners",
    AU.LID_TIGHTENER: "the eyelids tighten and narrow the eye opening",
    AU.NOSE_WRINKLER: "the skin along the nose wrinkles upward",
    AU.UPPER_LIP_RAISER: "the upper lip is drawn straight up",
    AU.NASOLABIAL_DEEPENER: "the fold from nose to mouth corner deepens",
    AU.LIP_CORNER_PULLER: "the lip corners are pulled up and back (a smile shape)",
    AU.SHARP_LIP_PULLER: "the lip corners are pulled up sharply, puffing the cheeks",
    AU.DIMPLER: "the lip corners tighten inward, forming dimples",
    AU.LIP_CORNER_DEPRESSOR: "the lip corners are pulled down",
    AU.LOWER_LIP_DEPRESSOR: "the lower lip is pulled down",
    AU.CHIN_RAISER: "the chin boss pushes the lower lip up",
    AU.LIP_PUCKER: "the lips push forward into a pucker",
    AU.LIP_STRETCHER: "the lips are stretched sideways",
    AU.LIP_FUNNELER: "the lips flare outward into a funnel",
    AU.LIP_TIGHTENER: "the lips tighten and narrow",
    AU.LIP_PRESSOR: "the lips press together",
    AU.LIPS_PART: "the lips part",
    AU.JAW_DROP: "the jaw drops and the mouth opens",
    AU.MOUTH_STRETCH: "the mouth is stretched wide open",
    AU.LIP_SUCK: "the lips are sucked in",
    AU.JAW_THRUST: "the jaw juts forward",
    AU.JAW_SIDEWAYS: "the jaw moves to one side",
    AU.CHEEK_PUFF: "the cheeks puff out",
    AU.LID_DROOP: "the upper eyelids droop",
    AU.SQUINT: "the eyes narrow in a squint",
    AU.EYES_CLOSED: "the eyes close",
    AU.BLINK: "the eyes blink",
}

_SIDE_WORDS = {Side.BOTH: "both sides", Side.LEFT: "left side only", Side.RIGHT: "right side only"}


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    system: str
    user: str
    version: str = PROMPT_VERSION

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


@lru_cache(maxsize=4)
def load_template(version: str = PROMPT_VERSION) -> tuple[Template, Template]:
    """The (system, user) templates of ``data/reasoner_prompt.<version>.txt``."""
    name = f"reasoner_prompt.{version}.txt"
    try:
        text = resources.files("microexpr").joinpath("data", name).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{name}: prompt template missing from the package ({exc})") from exc
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    body = "\n".join(lines)
    try:
        _, rest = body.split("=== system ===\n", 1)
        system, user = rest.split("=== user ===\n", 1)
    except ValueError as exc:
        raise DataError(f"{name}: needs an '=== system ===' and an '=== user ===' section") from exc
    return Template(system.strip() + "\n"), Template(user.strip() + "\n")


def render(request: ReasonerRequest, *, version: str = PROMPT_VERSION) -> RenderedPrompt:
    """Fill the template from the request's evidence (nothing else)."""
    system_t, user_t = load_template(version)
    labels = ", ".join(f'"{e.value}"' for e in Emotion)
    system = system_t.substitute(labels=labels)
    local = request.local
    user = user_t.substitute(
        episode=_episode_line(request),
        au_lines="\n".join(_au_line(a) for a in request.aus) or "- none",
        au_definitions="\n".join(
            f"- {a.au.code} {a.au.facs_name}: {AU_APPEARANCE.get(a.au, a.au.facs_name.lower())}."
            for a in request.aus
        )
        or "- none",
        habitual=", ".join(au.code for au in request.habitual_aus) or "none recorded",
        stage=local.stage.value,
        scores="\n".join(f"- {e.value}: {s:.2f}" for e, s in local.scores) or f"- {local.label.value}",
        margin=f"{local.margin:.2f}",
        trace="\n".join(f"- {line}" for line in local.trace) or "- (no trace)",
    )
    return RenderedPrompt(system=system, user=user, version=version)


def response_schema(request: ReasonerRequest) -> dict[str, Any]:
    """The structured-output schema: the closed label set, and citations
    restricted to the AUs actually present in this episode's evidence."""
    codes = [a.au.code for a in request.aus]
    cited: dict[str, Any] = {"type": "string"}
    if codes:
        cited["enum"] = codes
    else:
        cited["pattern"] = "^AU[0-9]{1,2}$"
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["label", "confidence", "rationale", "aus_cited"],
        "properties": {
            "label": {"type": "string", "enum": [e.value for e in Emotion]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "rationale": {"type": "string"},
            "aus_cited": {"type": "array", "items": cited},
        },
    }


def response_format(request: ReasonerRequest) -> dict[str, Any]:
    """The ``response_format`` argument of chat.completions.create."""
    return {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": response_schema(request)},
    }


def request_body(request: ReasonerRequest, *, model: str, temperature: float, max_output_tokens: int) -> dict[str, Any]:
    """Every field of the HTTP body the client will send (documented sample)."""
    return {
        "model": model,
        "messages": render(request).messages(),
        "response_format": response_format(request),
        "temperature": temperature,
        "max_completion_tokens": max_output_tokens,
    }


def estimate_tokens(body: dict[str, Any]) -> int:
    """A deliberately high token estimate (≈3 characters per token for the
    input) used to reserve budget before a request whose usage is unknown."""
    text = json.dumps(body["messages"]) + json.dumps(body["response_format"])
    return len(text) // 3 + int(body.get("max_completion_tokens") or 0)


def _episode_line(request: ReasonerRequest) -> str:
    if request.kind is None and request.duration_s is None:
        return "a coded dataset row (AUs only, no timing)."
    kind = "micro-expression" if request.kind is not None and request.kind.value == "micro" else "expression"
    parts = [kind]
    if request.duration_s is not None:
        parts.append(f"{request.duration_s * 1000:.0f} ms from onset to offset")
    if request.rise_s is not None and request.fall_s is not None:
        parts.append(f"onset to apex {request.rise_s * 1000:.0f} ms, apex to offset {request.fall_s * 1000:.0f} ms")
    return ", ".join(parts) + "."


def _au_line(a: AUEvidence) -> str:
    def f(v: float | None) -> str:
        return "?" if v is None else f"{v:.2f}"

    text = f"- {a.au.code} {a.au.facs_name}: {f(a.onset)} / {f(a.apex)} / {f(a.offset)}; {_SIDE_WORDS[a.side]}"
    if a.left is not None and a.right is not None:
        text += f" (left {a.left:.2f}, right {a.right:.2f})"
    if a.evidence_z is not None:
        text += f"; z {a.evidence_z:.1f}"
    return text
