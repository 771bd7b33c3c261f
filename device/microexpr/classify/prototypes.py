"""Stage 2: per-emotion AU prototypes, fitted from labelled data.

A prototype is what a dataset's coders mean by an emotion, as AU
frequencies: for emotion *c* and AU *a*, how often *a* was active in the
episodes labelled *c*. The frequencies are smoothed towards the AU's pooled
frequency over all emotions with ``m`` pseudo-episodes (Cestnik's
m-estimate), not towards 1/2 as Laplace smoothing does: with Laplace, an
emotion fitted on two episodes would "expect" every AU a third of the time and
pay for each one missing, so rare emotions (fear and sadness in CASME II,
contempt in SAMM) could never win. An episode's similarity to a prototype is the log-likelihood of its AU set under
those frequencies — present AUs count by their evidence weight, absent ones
by how rarely the prototype lacks them — plus the class's share of the data.
The result is a posterior over the fitted emotions.

This is where dataset conventions live, deliberately: the rules stay
FACS-only and the prototypes learn, for example, that CASME II's coders call
a lone chin raise "repression". ``microexpr fit-prototypes`` refits them for
any coding table, and ``microexpr eval`` refits them without the test subject
in every leave-one-subject-out fold.

The exact AU configurations seen per class are kept too: they make the trace
concrete ("AU4+AU7 seen 17× as disgust, 4× as others").
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microexpr.classify.evidence import Evidence
from microexpr.errors import DataError, ExitCode
from microexpr.facs import AU, AUActivation, Emotion

SCHEMA = "microexpr.prototypes/1"
#: Pseudo-episodes pulling each emotion's AU frequencies towards the pooled ones.
DEFAULT_M = 2.0
#: Frequencies are kept inside (FLOOR, 1 - FLOOR) so no AU is impossible.
FLOOR = 1e-4

#: One labelled episode: its readings (several when coded with "or") and label.
Sample = tuple[Sequence[Sequence[AUActivation]], Emotion]


def config_name(key: Sequence[str]) -> str:
    """``("4", "7", "10u")`` → ``"4+7+10u"`` (the JSON form)."""
    return "+".join(key) if key else "none"


def config_text(key: Sequence[str]) -> str:
    """``("4", "10u")`` → ``"AU4+AU10(one side)"`` for traces."""
    if not key:
        return "no AU"
    return "+".join(f"AU{k[:-1]}(one side)" if k.endswith("u") else f"AU{k}" for k in key)


_CONFIG_PART = re.compile(r"^(\d{1,2})(u?)$")


def _config_key(name: str) -> tuple[str, ...]:
    if name == "none":
        return ()
    parts = []
    for part in name.split("+"):
        match = _CONFIG_PART.match(part.strip())
        if match is None:
            raise ValueError(part)
        AU(int(match.group(1)))
        parts.append(match.group(1) + match.group(2))
    return tuple(sorted(parts, key=lambda p: int(p.rstrip("u"))))


@dataclass(frozen=True, slots=True)
class ClassPrototype:
    emotion: Emotion
    count: float  #: episodes (fractional when coded with alternatives)
    au_counts: Mapping[AU, float]  #: summed evidence weight per AU
    configs: Mapping[tuple[str, ...], float]  #: exact AU configurations seen (see Evidence.config_key)

    def frequency(self, au: AU, m: float, pooled: float) -> float:
        """P(au active | this emotion), m-estimate towards ``pooled``."""
        value = (self.au_counts.get(au, 0.0) + m * pooled) / (self.count + m)
        return min(1.0 - FLOOR, max(FLOOR, value))


@dataclass(frozen=True, slots=True)
class PrototypeScores:
    posterior: Mapping[Emotion, float]  #: over the fitted emotions allowed
    key: tuple[str, ...]  #: the episode's AU configuration
    seen: Mapping[Emotion, float]  #: how often that exact configuration was fitted, per emotion
    total: float  #: episodes the prototypes were fitted on

    @property
    def support(self) -> float:
        """Fitted episodes with exactly this configuration (any label)."""
        return sum(self.seen.values())

    def ranked(self) -> list[tuple[Emotion, float]]:
        return sorted(self.posterior.items(), key=lambda kv: -kv[1])

    def explain(self) -> str:
        ranked = self.ranked()
        best = ", ".join(f"{e.value} {p:.2f}" for e, p in ranked[:3])
        seen = {e: n for e, n in self.seen.items() if n > 0}
        config = config_text(self.key)
        if seen:
            counts = ", ".join(f"{_count(n)}× as {e.value}" for e, n in sorted(seen.items(), key=lambda kv: -kv[1]))
            where = f"{config} seen {counts} among {_count(self.total)} fitted episodes"
        elif self.key:
            where = f"{config} never seen as such in {_count(self.total)} fitted episodes; scored AU by AU"
        else:
            where = "no AU present"
        return f"prototypes: {best} ({where})"


def _count(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:.1f}"


@dataclass(frozen=True)
class PrototypeSet:
    classes: Mapping[Emotion, ClassPrototype]
    m: float = DEFAULT_M
    provenance: Mapping[str, Any] = field(default_factory=dict)

    # -- fitting ---------------------------------------------------------------

    @classmethod
    def fit(
        cls, samples: Iterable[Sample], *, m: float = DEFAULT_M, provenance: Mapping[str, Any] | None = None
    ) -> PrototypeSet:
        """Count AU frequencies per emotion. A row coded with ``or`` adds each
        of its n readings with weight 1/n."""
        counts: dict[Emotion, float] = {}
        au_counts: dict[Emotion, dict[AU, float]] = {}
        configs: dict[Emotion, dict[tuple[str, ...], float]] = {}
        for readings, emotion in samples:
            readings = list(readings)
            if not readings:
                continue
            share = 1.0 / len(readings)
            counts[emotion] = counts.get(emotion, 0.0) + 1.0
            per_au = au_counts.setdefault(emotion, {})
            per_config = configs.setdefault(emotion, {})
            for activations in readings:
                ev = Evidence.from_activations(activations)
                for au, weight in ev.weights().items():
                    per_au[au] = per_au.get(au, 0.0) + share * weight
                key = ev.config_key()
                per_config[key] = per_config.get(key, 0.0) + share
        if not counts:
            raise DataError("no labelled episodes to fit prototypes on")
        classes = {
            e: ClassPrototype(e, counts[e], dict(sorted(au_counts[e].items())), dict(configs[e]))
            for e in Emotion
            if e in counts
        }
        return cls(classes, float(m), dict(provenance or {}))

    # -- scoring ---------------------------------------------------------------

    @functools.cached_property
    def features(self) -> tuple[AU, ...]:
        """AUs seen in the fitted data: only they can tell the emotions apart."""
        found = {au for proto in self.classes.values() for au, n in proto.au_counts.items() if n > 0}
        return tuple(sorted(found))

    @functools.cached_property
    def pooled(self) -> dict[AU, float]:
        """Each feature AU's frequency over all fitted episodes."""
        total = self.total
        return {au: sum(p.au_counts.get(au, 0.0) for p in self.classes.values()) / total for au in self.features}

    @property
    def total(self) -> float:
        return sum(p.count for p in self.classes.values())

    @property
    def emotions(self) -> tuple[Emotion, ...]:
        return tuple(self.classes)

    def score(self, ev: Evidence, labels: Collection[Emotion] | None = None) -> PrototypeScores:
        """Posterior over the fitted emotions in ``labels`` (all fitted if None)."""
        allowed = [e for e in self.classes if labels is None or e in labels]
        weights = ev.weights()
        total = self.total
        k = len(self.classes)
        logp: dict[Emotion, float] = {}
        for emotion in allowed:
            proto = self.classes[emotion]
            value = math.log((proto.count + 1.0) / (total + k))
            for au in self.features:
                theta = proto.frequency(au, self.m, self.pooled[au])
                w = min(1.0, max(0.0, weights.get(au, 0.0)))
                value += w * math.log(theta) + (1.0 - w) * math.log(1.0 - theta)
            logp[emotion] = value
        posterior = _softmax(logp)
        key = ev.config_key()
        seen = {e: p.configs.get(key, 0.0) for e, p in self.classes.items()}
        return PrototypeScores(posterior, key, seen, total)

    # -- files -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "m": self.m,
            "provenance": dict(self.provenance),
            "classes": {
                e.value: {
                    "count": _num(p.count),
                    "au_counts": {f"AU{au.value}": _num(n) for au, n in sorted(p.au_counts.items())},
                    "configs": {
                        config_name(key): _num(n)
                        for key, n in sorted(p.configs.items(), key=lambda kv: (-kv[1], kv[0]))
                    },
                }
                for e, p in self.classes.items()
            },
        }

    def save(self, path: str | Path) -> None:
        path = Path(path)
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            raise DataError(f"{path}: cannot write prototypes ({exc.strerror or exc})",
                            exit_code=ExitCode.IO_ERROR) from None

    @classmethod
    def from_json(cls, data: Any, source: str = "prototypes") -> PrototypeSet:
        def bad(key: str, why: str) -> DataError:
            return DataError(f"{source}: {key}: {why}")

        if not isinstance(data, dict):
            raise bad("(top level)", "expected a JSON object")
        if data.get("schema") != SCHEMA:
            raise bad("schema", f"expected {SCHEMA!r}, got {data.get('schema')!r}")
        m = data.get("m", DEFAULT_M)
        # json reads Infinity/NaN; neither is a smoothing strength.
        if not isinstance(m, (int, float)) or isinstance(m, bool) or not (math.isfinite(m) and m > 0):
            raise bad("m", f"must be a positive number, got {m!r}")
        raw_classes = data.get("classes")
        if not isinstance(raw_classes, dict) or not raw_classes:
            raise bad("classes", "must be a non-empty object")
        classes: dict[Emotion, ClassPrototype] = {}
        for name, body in raw_classes.items():
            where = f"classes.{name}"
            try:
                emotion = Emotion(name)
            except ValueError:
                raise bad(where, "not an emotion label") from None
            if not isinstance(body, dict):
                raise bad(where, "must be an object")
            count = body.get("count")
            if not isinstance(count, (int, float)) or isinstance(count, bool) or count <= 0:
                raise bad(f"{where}.count", f"must be a positive number, got {count!r}")
            au_counts: dict[AU, float] = {}
            for code, n in (body.get("au_counts") or {}).items():
                try:
                    au = AU(int(str(code).upper().removeprefix("AU")))
                except ValueError:
                    raise bad(f"{where}.au_counts.{code}", "not an Action Unit") from None
                if not isinstance(n, (int, float)) or isinstance(n, bool) or not 0 <= n <= count + 1e-9:
                    raise bad(f"{where}.au_counts.{code}", f"must be in 0..count, got {n!r}")
                au_counts[au] = float(n)
            configs: dict[tuple[str, ...], float] = {}
            for config, n in (body.get("configs") or {}).items():
                try:
                    key = _config_key(str(config))
                except ValueError:
                    raise bad(f"{where}.configs.{config}", "not an AU configuration like '4+7'") from None
                if not isinstance(n, (int, float)) or isinstance(n, bool) or n < 0:
                    raise bad(f"{where}.configs.{config}", f"must be a count, got {n!r}")
                configs[key] = float(n)
            classes[emotion] = ClassPrototype(emotion, float(count), au_counts, configs)
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise bad("provenance", "must be an object")
        return cls(classes, float(m), provenance)

    @classmethod
    def load(cls, path: str | Path) -> PrototypeSet:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"{path}: prototypes file not found", exit_code=ExitCode.NO_INPUT) from None
        except IsADirectoryError:
            raise DataError(f"{path}: is a folder, not a prototypes file", exit_code=ExitCode.NO_INPUT) from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read prototypes ({exc.strerror or exc})",
                            exit_code=ExitCode.NO_INPUT) from None
        except UnicodeDecodeError as exc:  # read, but not a JSON text: malformed data (65)
            raise DataError(f"{path}: not a prototypes file (not UTF-8 text at byte {exc.start})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from None
        return cls.from_json(data, str(path))

    @classmethod
    def load_default(cls) -> PrototypeSet:
        """The prototypes shipped with the package (fitted on CASME II)."""
        return _default()


@functools.lru_cache(maxsize=1)
def _default() -> PrototypeSet:
    resource = importlib.resources.files("microexpr") / "data" / "prototypes.json"
    try:
        text = resource.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"shipped prototypes missing from the package ({exc}); reinstall microexpr") from None
    return PrototypeSet.from_json(json.loads(text), "microexpr/data/prototypes.json")


def provenance_for(
    *,
    dataset: str,
    path: Path,
    sha256: str,
    rows: int,
    subjects: int,
    command: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance block written into a prototypes file."""
    from microexpr import __version__

    out: dict[str, Any] = {
        "dataset": dataset,
        "file": path.name,
        "sha256": sha256,
        "rows": rows,
        "subjects": subjects,
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": command,
        "microexpr_version": __version__,
    }
    out.update(extra or {})
    return out


def _softmax(logp: Mapping[Emotion, float]) -> dict[Emotion, float]:
    if not logp:
        return {}
    top = max(logp.values())
    exp = {e: math.exp(v - top) for e, v in logp.items()}
    norm = sum(exp.values())
    return {e: v / norm for e, v in exp.items()}


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 6)


__all__ = ["ClassPrototype", "PrototypeScores", "PrototypeSet", "Sample", "provenance_for"]
