"""The documented example: exactly what one request sends.

``python -m microexpr.reasoner.sample`` prints the HTTP body the reasoner
would send for a typical ambiguous episode (fear or surprise, one-sided
lip stretch, a habitual AU12). ``docs/reasoner.md`` shows this output, and a
test checks that the doc matches what a real request puts on the wire.
"""

from __future__ import annotations

import json
import sys

from microexpr.classify.decide import Decision, Stage
from microexpr.facs import AU, AUActivation, Emotion, Side
from microexpr.reasoner.prompt import request_body
from microexpr.reasoner.request import ReasonerRequest
from microexpr.reasoner.settings import ReasonerSettings
from microexpr.spotting import Episode, EpisodeKind

SAMPLE_EVENT_ID = "6f1c2a7e-3b9d-4e15-8a42-0c5d7e9f1b23"
SAMPLE_SUBJECT_ID = 3


class _Context:
    habitual_aus = {AU.LIP_CORNER_PULLER: 0.45}


def sample_episode() -> Episode:
    apex = {AU.INNER_BROW_RAISER: 0.46, AU.OUTER_BROW_RAISER: 0.38, AU.BROW_LOWERER: 0.21,
            AU.LIP_STRETCHER: 0.27}
    return Episode(
        subject_id=SAMPLE_SUBJECT_ID,
        onset_frame=5120,
        apex_frame=5125,
        offset_frame=5131,
        onset_ts=170.667,
        apex_ts=170.833,
        offset_ts=171.033,
        kind=EpisodeKind.MICRO,
        activations=(
            AUActivation(AU.INNER_BROW_RAISER, Side.BOTH, 0.46),
            AUActivation(AU.OUTER_BROW_RAISER, Side.BOTH, 0.38),
            AUActivation(AU.BROW_LOWERER, Side.BOTH, 0.21),
            AUActivation(AU.LIP_STRETCHER, Side.LEFT, 0.27),
            AUActivation(AU.LIP_STRETCHER, Side.RIGHT, 0.09),
        ),
        onset_intensity={AU.INNER_BROW_RAISER: 0.04, AU.OUTER_BROW_RAISER: 0.03, AU.BROW_LOWERER: 0.05,
                         AU.LIP_STRETCHER: 0.02},
        apex_intensity=apex,
        offset_intensity={AU.INNER_BROW_RAISER: 0.08, AU.OUTER_BROW_RAISER: 0.05, AU.BROW_LOWERER: 0.06,
                          AU.LIP_STRETCHER: 0.03},
        apex_evidence={AU.INNER_BROW_RAISER: 5.2, AU.OUTER_BROW_RAISER: 4.1, AU.BROW_LOWERER: 2.6,
                       AU.LIP_STRETCHER: 3.0},
    )


def sample_decision() -> Decision:
    return Decision(
        label=Emotion.SURPRISE,
        confidence=0.44,
        margin=0.04,
        runner_up=Emotion.FEAR,
        stage=Stage.PROTOTYPE,
        scores=((Emotion.SURPRISE, 0.44), (Emotion.FEAR, 0.40), (Emotion.OTHERS, 0.09), (Emotion.SADNESS, 0.07)),
        trace=(
            "Rules: AU1+AU2 raised; AU4 present without AU5 or AU26, so fear and surprise both fit.",
            "Prototype: nearest surprise (0.44), then fear (0.40).",
            f"Context: subject {SAMPLE_SUBJECT_ID} shows AU12 habitually; not present here.",
        ),
        ambiguous=True,
    )


def sample_request() -> ReasonerRequest:
    return ReasonerRequest.from_episode(SAMPLE_EVENT_ID, sample_episode(), sample_decision(), _Context())


def sample_body(settings: ReasonerSettings | None = None) -> dict[str, object]:
    s = settings or ReasonerSettings()
    return request_body(sample_request(), model=s.model, temperature=s.temperature,
                        max_output_tokens=s.max_output_tokens)


def main() -> int:
    json.dump(sample_body(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
