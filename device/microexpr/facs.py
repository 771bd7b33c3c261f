"""The shared vocabulary: FACS Action Units, sides and emotion labels.

Every stage speaks in these types, so a coded dataset row ("L14+R12") and a
live episode from the camera reach the classifier in the same form.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class AU(IntEnum):
    """FACS Action Units (Ekman, Friesen & Hager 2002), by their number."""

    INNER_BROW_RAISER = 1
    OUTER_BROW_RAISER = 2
    BROW_LOWERER = 4
    UPPER_LID_RAISER = 5
    CHEEK_RAISER = 6
    LID_TIGHTENER = 7
    LIPS_TOWARD_EACH_OTHER = 8
    NOSE_WRINKLER = 9
    UPPER_LIP_RAISER = 10
    NASOLABIAL_DEEPENER = 11
    LIP_CORNER_PULLER = 12
    SHARP_LIP_PULLER = 13
    DIMPLER = 14
    LIP_CORNER_DEPRESSOR = 15
    LOWER_LIP_DEPRESSOR = 16
    CHIN_RAISER = 17
    LIP_PUCKER = 18
    TONGUE_SHOW = 19
    LIP_STRETCHER = 20
    NECK_TIGHTENER = 21
    LIP_FUNNELER = 22
    LIP_TIGHTENER = 23
    LIP_PRESSOR = 24
    LIPS_PART = 25
    JAW_DROP = 26
    MOUTH_STRETCH = 27
    LIP_SUCK = 28
    JAW_THRUST = 29
    JAW_SIDEWAYS = 30
    JAW_CLENCHER = 31
    LIP_BITE = 32
    CHEEK_BLOW = 33
    CHEEK_PUFF = 34
    CHEEK_SUCK = 35
    TONGUE_BULGE = 36
    LIP_WIPE = 37
    NOSTRIL_DILATOR = 38
    NOSTRIL_COMPRESSOR = 39
    LID_DROOP = 41
    SLIT = 42
    EYES_CLOSED = 43
    SQUINT = 44
    BLINK = 45
    WINK = 46
    HEAD_TURN_LEFT = 51
    HEAD_TURN_RIGHT = 52
    HEAD_UP = 53
    HEAD_DOWN = 54
    HEAD_TILT_LEFT = 55
    HEAD_TILT_RIGHT = 56
    HEAD_FORWARD = 57
    HEAD_BACK = 58
    EYES_TURN_LEFT = 61
    EYES_TURN_RIGHT = 62
    EYES_UP = 63
    EYES_DOWN = 64

    @property
    def code(self) -> str:
        """``"AU12"``: the form used in CSV columns, payloads and prompts."""
        return f"AU{self.value}"

    @property
    def facs_name(self) -> str:
        """``"Lip corner puller"``."""
        return self.name.replace("_", " ").capitalize()


class Side(StrEnum):
    """Where on the face an AU acts. CASME II/SAMM write L/R prefixes."""

    BOTH = "B"
    LEFT = "L"  # the subject's left
    RIGHT = "R"


class Emotion(StrEnum):
    """The closed label set (CASME II's estimated emotions plus SAMM's)."""

    HAPPINESS = "happiness"
    DISGUST = "disgust"
    REPRESSION = "repression"
    FEAR = "fear"
    SURPRISE = "surprise"
    SADNESS = "sadness"
    CONTEMPT = "contempt"
    ANGER = "anger"
    OTHERS = "others"


@dataclass(frozen=True, slots=True)
class AUActivation:
    """One active Action Unit: which, on which side, how strongly.

    ``intensity`` is on 0..1. FACS intensity letters map to A=0.2 … E=1.0;
    a coded AU without a letter is 1.0 (present). Live episodes carry the
    estimator's intensity at the apex.
    """

    au: AU
    side: Side = Side.BOTH
    intensity: float = 1.0

    def __str__(self) -> str:
        prefix = "" if self.side is Side.BOTH else self.side.value
        return f"{prefix}{self.au.value}"
