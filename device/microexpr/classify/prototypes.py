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


#: A dataset needs this many rows of one AU configuration before its
#: majority label for it counts as that dataset's convention.
CONTEST_MIN_ROWS = 3.0
#: ... and a dataset whose coders give its majority label to fewer than half
#: of its rows of a configuration has no convention for it: the
#: configuration is contested too (CAS(ME)³'s lone AU14: anger 36, sadness
#: 23, happiness 21).
CONTEST_SPLIT = 0.5


@dataclass(frozen=True)
class Component:
    """One dataset inside a pooled prototype set, fitted on its own rows."""

    name: str
    #: ``harmonise.table_fingerprint`` of the rows it was fitted on: lets
    #: ``microexpr eval`` leave it out when it scores that very table.
    fingerprint: str
    prototypes: PrototypeSet
    weight: float = 1.0  #: what each of its rows counts in the pool

    @property
    def rows(self) -> float:
        return self.prototypes.total

    @property
    def labels(self) -> tuple[Emotion, ...]:
        return self.prototypes.emotions


@dataclass(frozen=True)
class PrototypeSet:
    classes: Mapping[Emotion, ClassPrototype]
    m: float = DEFAULT_M
    provenance: Mapping[str, Any] = field(default_factory=dict)
    #: The datasets a pooled set was built from (empty for one dataset).
    components: tuple[Component, ...] = ()

    # -- pooling ---------------------------------------------------------------

    @classmethod
    def pool(
        cls,
        components: Sequence[tuple[str, str, PrototypeSet]],
        *,
        m: float = DEFAULT_M,
        provenance: Mapping[str, Any] | None = None,
    ) -> PrototypeSet:
        """Merge per-dataset prototypes, each dataset weighted to the same
        total (the mean row count), so that one large table does not dictate
        the conventions: every row of dataset d counts mean_rows / rows_d."""
        if not components:
            raise DataError("no datasets to pool prototypes from")
        sizes = [p.total for _n, _f, p in components]
        mean = sum(sizes) / len(sizes)
        parts = tuple(Component(name, fp, p, mean / size) for (name, fp, p), size in zip(components, sizes,
                                                                                           strict=True))
        counts: dict[Emotion, float] = {}
        au_counts: dict[Emotion, dict[AU, float]] = {}
        configs: dict[Emotion, dict[tuple[str, ...], float]] = {}
        for part in parts:
            for emotion, proto in part.prototypes.classes.items():
                counts[emotion] = counts.get(emotion, 0.0) + part.weight * proto.count
                per_au = au_counts.setdefault(emotion, {})
                for au, n in proto.au_counts.items():
                    per_au[au] = per_au.get(au, 0.0) + part.weight * n
                per_config = configs.setdefault(emotion, {})
                for key, n in proto.configs.items():
                    per_config[key] = per_config.get(key, 0.0) + part.weight * n
        classes = {e: ClassPrototype(e, counts[e], dict(sorted(au_counts[e].items())), dict(configs[e]))
                   for e in Emotion if e in counts}
        return cls(classes, float(m), dict(provenance or {}), parts)

    def without(self, fingerprint: str, sha256: str | None = None) -> PrototypeSet | None:
        """The pool re-merged without the dataset with this row fingerprint
        (or fitted on the file with this sha256): the set itself when none
        matches; None when nothing would be left."""
        kept = [c for c in self.components
                if c.fingerprint != fingerprint and (sha256 is None or c.prototypes.provenance.get("sha256") != sha256)]
        if len(kept) == len(self.components):
            return self
        if not kept:
            return None
        provenance = dict(self.provenance)
        provenance["left_out"] = [c.name for c in self.components if all(c is not k for k in kept)]
        return PrototypeSet.pool([(c.name, c.fingerprint, c.prototypes) for c in kept], m=self.m,
                                 provenance=provenance)

    @functools.cached_property
    def contested(self) -> dict[tuple[str, ...], dict[str, dict[Emotion, float]]]:
        """AU configurations the pooled datasets label differently.

        A configuration is contested when two datasets with at least
        ``CONTEST_MIN_ROWS`` rows of it have different majority labels (a lone
        AU4 is "others" in CASME II and "disgust" in CAS(ME)³), or when one
        dataset splits it with no label reaching ``CONTEST_SPLIT``. Value: the
        label counts per dataset, for the trace.
        """
        if len(self.components) < 2:
            return {}
        keys = {key for c in self.components for p in c.prototypes.classes.values() for key in p.configs}
        out: dict[tuple[str, ...], dict[str, dict[Emotion, float]]] = {}
        for key in keys:
            per_dataset: dict[str, dict[Emotion, float]] = {}
            majorities: set[Emotion] = set()
            split = False
            for c in self.components:
                seen = {e: p.configs.get(key, 0.0) for e, p in c.prototypes.classes.items()}
                seen = {e: n for e, n in seen.items() if n > 0}
                total = sum(seen.values())
                if total < CONTEST_MIN_ROWS:
                    continue
                per_dataset[c.name] = dict(sorted(seen.items(), key=lambda kv: -kv[1]))
                top = max(seen.values())
                majorities |= {e for e, n in seen.items() if n == top}
                split = split or top / total < CONTEST_SPLIT
            if len(majorities) > 1 or split:
                out[key] = per_dataset
        return out

    def contest(self, key: tuple[str, ...]) -> str | None:
        """How the datasets disagree about this configuration, or None."""
        per_dataset = self.contested.get(tuple(key))
        if not per_dataset:
            return None
        return "; ".join(f"{name}: " + ", ".join(f"{e.value} {_count(n)}" for e, n in labels.items())
                         for name, labels in per_dataset.items())

    # -- fitting ---------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        samples: Iterable[Sample],
        *,
        m: float = DEFAULT_M,
        provenance: Mapping[str, Any] | None = None,
        weight: float = 1.0,
    ) -> PrototypeSet:
        """Count AU frequencies per emotion. A row coded with ``or`` adds each
        of its n readings with weight 1/n; every row counts ``weight``
        episodes (pooling gives each dataset the same total weight)."""
        counts: dict[Emotion, float] = {}
        au_counts: dict[Emotion, dict[AU, float]] = {}
        configs: dict[Emotion, dict[tuple[str, ...], float]] = {}
        for readings, emotion in samples:
            readings = list(readings)
            if not readings:
                continue
            share = weight / len(readings)
            counts[emotion] = counts.get(emotion, 0.0) + weight
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
        out = self._body_json()
        if self.components:
            out["datasets"] = [
                {"name": c.name, "fingerprint": c.fingerprint, "weight": round(c.weight, 6),
                 **c.prototypes.to_json()}
                for c in self.components
            ]
        return out

    def _body_json(self) -> dict[str, Any]:
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
        datasets = data.get("datasets")
        if datasets is None:
            return cls(classes, float(m), provenance)
        if not isinstance(datasets, list) or len(datasets) < 2:
            raise bad("datasets", "must be a list of at least two per-dataset prototype sets")
        parts = []
        for i, item in enumerate(datasets):
            if not isinstance(item, dict):
                raise bad(f"datasets.{i}", "must be an object")
            name, fingerprint = item.get("name"), item.get("fingerprint")
            if not isinstance(name, str) or not name or not isinstance(fingerprint, str) or not fingerprint:
                raise bad(f"datasets.{i}", "needs a non-empty 'name' and 'fingerprint'")
            parts.append((name, fingerprint, cls.from_json(
                {k: v for k, v in item.items() if k not in ("name", "fingerprint", "weight")},
                f"{source}: datasets.{i}")))
        # The pool is re-merged from its datasets: the top-level classes are
        # for people reading the file.
        return cls.pool(parts, m=float(m), provenance=provenance)

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
    def load_default(cls, name: str = "prototypes.json") -> PrototypeSet:
        """Prototypes shipped with the package: ``prototypes.json`` (pooled
        over CASME II, CAS(ME)³ part A and MMEW) unless another packaged
        file (``prototypes_casme2.json``, the CASME II profile) is named."""
        return _default(name)


@functools.lru_cache(maxsize=4)
def _default(name: str) -> PrototypeSet:
    resource = importlib.resources.files("microexpr") / "data" / name
    try:
        text = resource.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"shipped prototypes {name} missing from the package ({exc}); reinstall microexpr") from None
    return PrototypeSet.from_json(json.loads(text), f"microexpr/data/{name}")


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


__all__ = ["ClassPrototype", "Component", "PrototypeScores", "PrototypeSet", "Sample", "provenance_for"]
