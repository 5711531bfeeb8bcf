"""Deterministic synthetic clinic: FHIR R4 resources with known effects and planted real-world mess.

`generate(GeneratorConfig(...))` returns every resource version as JSON dicts plus a ground-truth
manifest. The same config always gives byte-identical output: all randomness comes from
`random.Random` streams seeded from `config.seed`, dates come from the config (never "today"), and
ids are counters (`pat-00001`, `enc-00001-03`, `qr-00001-03-phq9`).

The clinical content follows a small latent model (the effects in docs/domain.md, "Why these measures"):

- therapist random effect on alliance (SD ~0.3 on the 1-5 WAI scale, a few clear outliers) and a
  separate therapist *rating bias* that only touches the clinician-rated form;
- patient latent alliance, a slightly rising per-session trajectory, and ruptures (a drop of at
  least one point on the 1-5 scale) followed by repair or, more often for low-alliance patients, by
  dropout;
- early patient-rated alliance (sessions 1-3) drives PHQ-9 improvement; GAD-7 and ORS move with it;
- patient-rated alliance drives MARS, DAI-10 and on-time refills (PDC); the clinician's rating
  correlates only modestly with the patient's, so it barely predicts them;
- CBT skill use (CBTSQ total, its own random stream per episode) lowers endpoint PHQ-9 additively and,
  through a skill use x early alliance term, more so when the alliance is strong (`SKILL_EFFECTS`).

Mess (`config.mess_rate`, 0 disables it) is planted after the clean clinic is built, from its own
random stream, so switching mess on or off never changes the underlying clinic. Every planted defect
is listed in `manifest["mess"]`.
"""

from __future__ import annotations

import copy
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

from demo import forms
from demo.forms import LAYOUTS, canonical_for, response_items

Resource = dict[str, Any]

# Load order: referenced resources before the resources that reference them.
LOAD_ORDER: tuple[str, ...] = (
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Patient",
    "Questionnaire",
    "EpisodeOfCare",
    "Appointment",
    "Encounter",
    "MedicationRequest",
    "MedicationDispense",
    "QuestionnaireResponse",
)
MESS_KINDS: tuple[str, ...] = (
    "invalid_structure",
    "invalid_unused_element",
    "entered_in_error",
    "amended",
    "duplicate_submission",
    "missing_items",
    "unknown_questionnaire",
    "total_mismatch",
    "in_progress",
    "stopped",
)
# R4 QuestionnaireResponse.status is a required binding; fhir.resources does not check code bindings,
# so a status outside this set passes the pydantic model and the pipeline must test it itself.
QR_STATUSES = frozenset({"in-progress", "completed", "amended", "entered-in-error", "stopped"})

PATIENT_ID_SYSTEM = "http://alliance-qi.example.org/fhir/sid/mrn"
PRACTITIONER_ID_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
DRUG_FORM = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

# A pharmacy's own formulary code system: some dispenses of DRUGS[0] carry its code instead of RxNorm,
# a code the marts' medication mapping (marts/reference/medications.yaml) does not know (unmapped fills).
LOCAL_FORMULARY = "http://alliance-qi.example.org/fhir/CodeSystem/pharmacy-formulary"
LOCAL_FORMULARY_CODE = "SERT50"

# (RxNorm code, display, dose form code, dose form unit)
DRUGS: tuple[tuple[str, str, str, str], ...] = (
    ("312940", "sertraline 50 MG Oral Tablet", "TAB", "tablet"),
    ("349332", "escitalopram 10 MG Oral Tablet", "TAB", "tablet"),
    ("310385", "fluoxetine 20 MG Oral Capsule", "CAP", "capsule"),
)

FEMALE_NAMES = (
    "Alice",
    "Maria",
    "Sofia",
    "Grace",
    "Hannah",
    "Leila",
    "Nora",
    "Priya",
    "Ruth",
    "Yuki",
    "Emma",
    "Ines",
)
MALE_NAMES = (
    "Ben",
    "Carlos",
    "David",
    "Elias",
    "Felix",
    "Hugo",
    "Ivan",
    "Jonas",
    "Kwame",
    "Liam",
    "Omar",
    "Tom",
)
OTHER_NAMES = ("Alex", "Sam", "Robin", "Kai")
FAMILY_NAMES = (
    "Adams",
    "Baker",
    "Chen",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ito",
    "Jensen",
    "Khan",
    "Lopez",
    "Moreau",
    "Novak",
    "Okafor",
    "Patel",
    "Quinn",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Usman",
    "Varga",
    "Walker",
    "Young",
)
CLINIC_NAMES = ("Riverside", "Northgate", "Hillcrest", "Lakeside", "Eastbrook", "Westfield", "Southbank")

# WAI-SR item -> subscale (docs/domain.md: Task 1,2,10,12; Goal 4,6,8,11; Bond 3,5,7,9; none reverse-keyed).
WAI_SUBSCALES = (
    "task",
    "task",
    "bond",
    "goal",
    "bond",
    "goal",
    "bond",
    "goal",
    "bond",
    "task",
    "goal",
    "task",
)
# Short instrument tags used in QuestionnaireResponse ids.
QR_TAG = {
    "wai-sr": "wai",
    "wai-sr-t": "wait",
    "srs": "srs",
    "ors": "ors",
    "phq-9": "phq9",
    "gad-7": "gad7",
    "mars": "mars",
    "dai-10": "dai",
    "cbtsq": "cbtsq",
}
INSTRUMENT_RANGE = {
    "wai-sr": (1, 5),
    "wai-sr-t": (1, 5),
    "srs": (0, 10),
    "ors": (0, 10),
    "phq-9": (0, 3),
    "gad-7": (0, 3),
    "cbtsq": (1, 5),
}
# The planted CBT skill-use model (docs/domain.md, "Skill use and alliance"): an episode that completes
# its planned sessions ends with PHQ-9 = baseline - drop, where the drop gains
# -coef * (CBTSQ total - SKILL_CENTRE) and -coef * (early alliance - ALLIANCE_CENTRE) * (CBTSQ total -
# SKILL_CENTRE) beside the alliance term it always had. As coefficients of endpoint PHQ-9 on the
# centred predictors (per CBTSQ total point, per WAI-SR mean point, per point x point; baseline per
# PHQ-9 point). Episodes that end early stop part-way down the same curve, so their endpoints carry a
# fraction of each effect: a fit over all closed episodes recovers somewhat smaller magnitudes.
SKILL_CENTRE = 48.0  # CBTSQ total (16-80) of the average episode
SKILL_SD = 9.0  # between-episode SD of the skill-use level, CBTSQ total points
ALLIANCE_CENTRE = 3.8  # early WAI-SR mean of the average episode
SKILL_EFFECTS: dict[str, float] = {
    "baseline_phq9": 0.7,
    "skill_use": -0.15,
    "alliance": -3.6,
    "skill_use_x_alliance": -0.2,
}


@dataclass
class GeneratorConfig:
    """What to generate. Dates are fixed (not today) so the output is deterministic."""

    patients: int = 300
    seed: int = 42
    clinics: int = 3
    therapists: int = 12
    mess_rate: float = 0.03
    start: date = date(2026, 1, 5)
    end: date = date(2026, 10, 30)
    medication_rate: float = 0.6  # share of patients on an antidepressant
    # Share of episodes planted as not on track (PHQ-9 flat or worse for an average alliance and skill use),
    # drawn from their own random stream, so the rest of the clinic is the same at any rate.
    not_on_track_rate: float = 0.12
    # Which form a PHQ-9 / GAD-7 response is recorded on (the same instrument as seen in the wild).
    phq9_shapes: tuple[tuple[str, float], ...] = (
        ("phq-9", 0.7),
        ("phq-9-lhc", 0.1),
        ("phq-9-sdc", 0.1),
        ("phq-9-vendor", 0.1),
    )
    gad7_shapes: tuple[tuple[str, float], ...] = (
        ("gad-7", 0.8),
        ("gad-7-vendor", 0.1),
        ("gad-7-legacy", 0.1),
    )

    def __post_init__(self) -> None:
        if self.patients < 1 or self.clinics < 1 or self.therapists < self.clinics:
            raise ValueError("need patients >= 1, clinics >= 1 and at least one therapist per clinic")
        if not 0.0 <= self.mess_rate <= 1.0:
            raise ValueError("mess_rate must be between 0 and 1")
        if (self.end - self.start).days < 60:
            raise ValueError("the period from start to end must be at least 60 days")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view for the manifest."""
        out = asdict(self)
        out["start"] = self.start.isoformat()
        out["end"] = self.end.isoformat()
        out["phq9_shapes"] = dict(self.phq9_shapes)
        out["gad7_shapes"] = dict(self.gad7_shapes)
        return out


@dataclass
class GeneratedData:
    """Generated resources and their ground truth.

    `versions[0]` holds the first version of every resource, `versions[1]` later versions of some of
    them (same ids: amendments and entered-in-error updates). Resources carry no `meta.versionId` or
    `meta.lastUpdated` (a server assigns its own); `last_updated` maps `Type/id/_history/v` to the
    instant the NDJSON writer stamps on that version.
    """

    versions: list[list[Resource]]
    manifest: dict[str, Any]
    last_updated: dict[str, str] = field(default_factory=dict)

    def iter_versions(self) -> Iterator[tuple[str, Resource]]:
        """Every resource version in version order, with its versionId ("1", "2", ...)."""
        seen: Counter[tuple[str, str]] = Counter()
        for phase in self.versions:
            for res in phase:
                key = (res["resourceType"], res["id"])
                seen[key] += 1
                yield str(seen[key]), res

    def latest(self) -> dict[tuple[str, str], Resource]:
        """The newest version of every resource, keyed by (resourceType, id)."""
        out: dict[tuple[str, str], Resource] = {}
        for phase in self.versions:
            for res in phase:
                out[(res["resourceType"], res["id"])] = res
        return out

    def of_type(self, resource_type: str, phase: int | None = None) -> list[Resource]:
        """Resources of one type: one phase, or (phase=None) the newest version of each."""
        if phase is not None:
            return [r for r in self.versions[phase] if r["resourceType"] == resource_type]
        return [r for (t, _), r in self.latest().items() if t == resource_type]


# ---------------------------------------------------------------- small helpers


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _iclamp(x: float, lo: int, hi: int) -> int:
    return int(_clamp(round(x), lo, hi))


def _eastern(d: date, t: time) -> datetime:
    """Local clinic time (US Eastern) with its UTC offset, computed here so no tz database is needed."""
    # DST: second Sunday in March 02:00 to first Sunday in November 02:00 (US rules since 2007).
    march = date(d.year, 3, 8) + timedelta(days=(6 - date(d.year, 3, 8).weekday()) % 7)
    november = date(d.year, 11, 1) + timedelta(days=(6 - date(d.year, 11, 1).weekday()) % 7)
    dst = march <= d < november
    return datetime.combine(d, t, tzinfo=timezone(timedelta(hours=-4 if dst else -5)))


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


def _instant(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ref(resource_type: str, rid: str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{rid}"}


def _spread(
    rng: random.Random,
    n: int,
    lo: int,
    hi: int,
    total: int,
    offsets: list[float] | None = None,
    noise: float = 0.5,
    up_weights: list[float] | None = None,
) -> list[int]:
    """n integers in [lo, hi] that sum exactly to `total` (clamped to what is reachable).

    Items start near the mean plus per-item offsets and noise, then random items are nudged by one
    until the sum is exact, so scoring the answers gives precisely the intended total.
    """
    total = int(_clamp(total, n * lo, n * hi))
    base = total / n
    offs = offsets or [0.0] * n
    vals = [_iclamp(base + offs[i] + rng.gauss(0, noise), lo, hi) for i in range(n)]
    w_up = up_weights or [1.0] * n
    diff = total - sum(vals)
    while diff:
        if diff > 0:
            idx = [i for i in range(n) if vals[i] < hi]
            i = rng.choices(idx, weights=[w_up[j] for j in idx])[0]
            vals[i] += 1
            diff -= 1
        else:
            idx = [i for i in range(n) if vals[i] > lo]
            i = rng.choices(idx, weights=[1.0 / w_up[j] for j in idx])[0]
            vals[i] -= 1
            diff += 1
    return vals


def _pick(rng: random.Random, mix: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([k for k, _ in mix], weights=[w for _, w in mix])[0]


def _pdc(fills: list[tuple[date, int, str]], period_end: date) -> float | None:
    """Proportion of days covered (PQA): index fill to period end, same-drug overlaps shift forward;
    none unless the index fill is at least 91 days before the period end (PQA)."""
    if len({d for d, _, _ in fills}) < 2:
        return None
    start = min(d for d, _, _ in fills)
    days = (period_end - start).days + 1
    if (period_end - start).days < 91:
        return None
    covered: set[date] = set()
    next_free: dict[str, date] = {}
    for d, supply, drug in sorted(fills):
        begin = max(d, next_free.get(drug, d))
        for k in range(supply):
            covered.add(begin + timedelta(days=k))
        next_free[drug] = begin + timedelta(days=supply)
    return sum(1 for c in covered if start <= c <= period_end) / days


# ---------------------------------------------------------------- the model's actors


@dataclass
class _Therapist:
    num: int
    id: str
    clinic: int
    effect: float  # true alliance effect, felt by the patient
    bias: float  # how generously this therapist rates alliance on the clinician form
    outlier: str | None = None  # 'high' / 'low' when planted as a clear outlier (the funnel's truth)


@dataclass
class _PatientCtx:
    num: int
    id: str
    clinic: int
    alliance: float  # latent patient alliance (deviation on the 1-5 scale)
    adherence_trait: float  # standard normal, adherence apart from alliance
    on_medication: bool
    appt_no: int = 0

    def next_appt(self) -> int:
        self.appt_no += 1
        return self.appt_no


@dataclass
class _QRInfo:
    """What a QuestionnaireResponse says, so mess can rebuild it."""

    id: str
    instrument: str
    form_id: str
    values: list[int | bool | None]
    total: int | None
    difficulty: int | None
    session: int


# ---------------------------------------------------------------- builder


class _Clinic:
    """Builds the clean clinic, then plants the mess. Use `generate()`."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.cfg = cfg
        # Separate streams: planting mess must not shift the clinic's own random draws.
        self.rng = random.Random(f"{cfg.seed}:clinic")
        self.mess_rng = random.Random(f"{cfg.seed}:mess")
        self.not_on_track_rng = random.Random(f"{cfg.seed}:not-on-track")
        self.res: dict[str, list[Resource]] = {t: [] for t in LOAD_ORDER}
        self.index: dict[tuple[str, str], Resource] = {}
        self.recorded: dict[tuple[str, str], datetime] = {}
        self.phase1: list[Resource] = []
        self.phase1_recorded: dict[tuple[str, str], datetime] = {}
        self.qr_info: dict[str, _QRInfo] = {}
        self.mess: list[dict[str, Any]] = []
        self.touched: set[tuple[str, str]] = set()
        self.therapists: list[_Therapist] = []
        self.prescribers: list[str] = []
        self.clinic_ids: list[str] = []
        self.encounters: list[tuple[str, str, str, datetime]] = []  # (enc, patient, therapist, start)
        self.truth_patients: dict[str, dict[str, Any]] = {}
        self.truth_episodes: dict[str, dict[str, Any]] = {}
        self.setup_time = _eastern(cfg.start - timedelta(days=30), time(9, 0))

    # -- bookkeeping

    def add(self, res: Resource, recorded: datetime) -> Resource:
        key = (res["resourceType"], res["id"])
        if key in self.index:
            raise AssertionError(f"duplicate id {key}")  # a generator bug, never data
        self.res[res["resourceType"]].append(res)
        self.index[key] = res
        self.recorded[key] = recorded
        return res

    # -- organisation

    def build_organisation(self) -> None:
        cfg, rng = self.cfg, self.rng
        self.add(
            {
                "resourceType": "Organization",
                "id": "org-practice",
                "active": True,
                "type": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                "code": "prov",
                                "display": "Healthcare Provider",
                            }
                        ]
                    }
                ],
                "name": "Alliance Psychotherapy Practice",
            },
            self.setup_time,
        )
        for c in range(cfg.clinics):
            cid = f"org-clinic-{c + 1:02d}"
            self.clinic_ids.append(cid)
            name = CLINIC_NAMES[c % len(CLINIC_NAMES)] + ("" if c < len(CLINIC_NAMES) else f" {c + 1}")
            self.add(
                {
                    "resourceType": "Organization",
                    "id": cid,
                    "active": True,
                    "type": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                    "code": "dept",
                                    "display": "Hospital Department",
                                }
                            ]
                        }
                    ],
                    "name": f"{name} Clinic",
                    "partOf": _ref("Organization", "org-practice"),
                },
                self.setup_time,
            )
        # Therapist effects: mostly N(0, 0.2) plus a few clear outliers each way, overall SD ~0.3.
        effects = [rng.gauss(0, 0.15) for _ in range(cfg.therapists)]
        n_out = max(1, cfg.therapists // 6)
        order = list(range(cfg.therapists))
        rng.shuffle(order)
        for k in range(n_out):
            effects[order[k]] = 0.45 + 0.1 * rng.random()
            effects[order[n_out + k]] = -0.45 - 0.1 * rng.random()
        planted = {order[k]: "high" for k in range(n_out)} | {order[n_out + k]: "low" for k in range(n_out)}
        for t in range(cfg.therapists):
            clinic = t % cfg.clinics
            tid = f"prac-{t + 1:03d}"
            th = _Therapist(t + 1, tid, clinic, effects[t], rng.gauss(0, 0.25), planted.get(t))
            self.therapists.append(th)
            self._practitioner(tid, f"role-{t + 1:03d}", clinic, "Psychotherapist", t + 1)
        for c in range(cfg.clinics):
            pid = f"prac-rx-{c + 1:02d}"
            self.prescribers.append(pid)
            self._practitioner(pid, f"role-rx-{c + 1:02d}", c, "Psychiatrist", 900 + c)

    def _practitioner(self, pid: str, role_id: str, clinic: int, role: str, num: int) -> None:
        rng = self.rng
        female = rng.random() < 0.6
        given = rng.choice(FEMALE_NAMES if female else MALE_NAMES)
        self.add(
            {
                "resourceType": "Practitioner",
                "id": pid,
                "identifier": [{"system": PRACTITIONER_ID_SYSTEM, "value": f"{1900000000 + num * 7919}"}],
                "active": True,
                "name": [{"family": rng.choice(FAMILY_NAMES), "given": [given], "prefix": ["Dr"]}],
                "telecom": [{"system": "email", "value": f"{pid}@alliance-qi.example.org", "use": "work"}],
                "gender": "female" if female else "male",
            },
            self.setup_time,
        )
        self.add(
            {
                "resourceType": "PractitionerRole",
                "id": role_id,
                "active": True,
                "practitioner": _ref("Practitioner", pid),
                "organization": _ref("Organization", self.clinic_ids[clinic]),
                "code": [{"text": role}],
            },
            self.setup_time,
        )

    # -- patients

    def build_patients(self) -> None:
        cfg, rng = self.cfg, self.rng
        span = (cfg.end - cfg.start).days
        by_clinic = {c: [t for t in self.therapists if t.clinic == c] for c in range(cfg.clinics)}
        for n in range(1, cfg.patients + 1):
            p = _PatientCtx(
                num=n,
                id=f"pat-{n:05d}",
                clinic=rng.randrange(cfg.clinics),
                alliance=rng.gauss(0, 0.45),
                adherence_trait=rng.gauss(0, 1),
                on_medication=rng.random() < cfg.medication_rate,
            )
            first_start = cfg.start + timedelta(days=rng.randrange(0, max(1, span - 21)))
            self._patient_resource(p, first_start)
            therapist = rng.choice(by_clinic[p.clinic])
            episodes = [self._episode(p, 1, first_start, therapist)]
            last_end = episodes[0]["end"]
            # Some patients come back for a second course of therapy after a break.
            if last_end is not None and rng.random() < 0.18:
                second = last_end + timedelta(days=rng.randint(42, 112))
                if second < cfg.end - timedelta(days=14):
                    if rng.random() < 0.4:
                        therapist = rng.choice(by_clinic[p.clinic])
                    episodes.append(self._episode(p, 2, second, therapist))
            pdc = self._medication(p, episodes) if p.on_medication else None
            self.truth_patients[p.id] = {
                "clinic": self.clinic_ids[p.clinic],
                "alliance_latent": round(p.alliance, 4),
                "adherence_trait": round(p.adherence_trait, 4),
                "on_medication": p.on_medication,
                "pdc": None if pdc is None else round(pdc, 4),
                "episodes": [e["id"] for e in episodes],
            }

    def _patient_resource(self, p: _PatientCtx, first_start: date) -> None:
        rng = self.rng
        r = rng.random()
        gender = "female" if r < 0.6 else "male" if r < 0.97 else "other"
        names = FEMALE_NAMES if gender == "female" else MALE_NAMES if gender == "male" else OTHER_NAMES
        age_days = rng.randint(18 * 365, 72 * 365)
        self.add(
            {
                "resourceType": "Patient",
                "id": p.id,
                "identifier": [
                    {"use": "usual", "system": PATIENT_ID_SYSTEM, "value": f"MRN{100000 + p.num}"}
                ],
                "active": True,
                "name": [
                    {"use": "official", "family": rng.choice(FAMILY_NAMES), "given": [rng.choice(names)]}
                ],
                "telecom": [
                    {
                        "system": "phone",
                        "value": f"555-{rng.randint(100, 999)}-{p.num % 10000:04d}",
                        "use": "mobile",
                        "rank": 1,
                    }
                ],
                "gender": gender,
                "birthDate": (self.cfg.start - timedelta(days=age_days)).isoformat(),
                "managingOrganization": _ref("Organization", self.clinic_ids[p.clinic]),
            },
            _eastern(first_start - timedelta(days=7), time(11, 0)),
        )

    # -- one episode of care, session by session

    def _episode(self, p: _PatientCtx, ep_no: int, start: date, th: _Therapist) -> dict[str, Any]:
        cfg, rng = self.cfg, self.rng
        eoc_id = f"eoc-{p.num:05d}-{ep_no}"
        while start.weekday() >= 5:  # sessions on weekdays
            start += timedelta(days=1)
        slot = time(rng.choice((8, 9, 10, 11, 13, 14, 15, 16, 17)), rng.choice((0, 0, 30)))
        planned = rng.randint(6, 16)
        baseline = _iclamp(rng.gauss(15 if ep_no == 1 else 13, 3.8), 5, 27)
        gad_base = _iclamp(0.62 * baseline + rng.gauss(0, 2.2), 0, 21)
        # Episode-level alliance: true (patient-felt) level and the clinician's view of it.
        p_level = 3.75 + th.effect + p.alliance + rng.gauss(0, 0.15)
        c_level = 3.85 + th.bias + 0.38 * (p.alliance + th.effect) + rng.gauss(0, 0.5)
        # Subscale profile: bond items usually run a little higher than task and goal.
        sub = {"task": rng.gauss(-0.05, 0.12), "goal": rng.gauss(-0.1, 0.12), "bond": rng.gauss(0.15, 0.12)}
        wai_offsets = [sub[k] for k in WAI_SUBSCALES]
        measure_at = {1, planned}
        s = 1
        while True:
            s += rng.randint(2, 4)
            if s >= planned:
                break
            measure_at.add(s)
        med_at = {1, (planned + 1) // 2, planned} if p.on_medication else set()
        # CBT skill use draws from its own stream, so adding it left every other draw of the clinic alone.
        srng = random.Random(f"{cfg.seed}:skills:{eoc_id}")
        skill_level = _clamp(
            SKILL_CENTRE + SKILL_SD * srng.gauss(0, 1) + 6.0 * (p_level - 3.75), 16, 80
        )  # a little higher for patients with a stronger alliance (r about 0.3)
        cbtsq_totals: list[tuple[int, int]] = []
        p_noshow = 0.05 + (0.05 if p_level < 3.3 else 0.0)
        p_cancel = 0.05
        hazard = _clamp(0.015 + 0.05 * (3.5 - p_level), 0.005, 0.08)
        # A planted non-responder: its PHQ-9 drop is replaced (below) by one of -4..+1 points, plus the
        # alliance and skill-use effects every episode has.
        planted_not_on_track = self.not_on_track_rng.random() < cfg.not_on_track_rate
        planted_drop = self.not_on_track_rng.uniform(-4, 1)

        def items(n: int, lo: int, hi: int, natural: int, total: int, *shape: Any) -> list[int]:
            """Item answers summing to `total`. How many draws `_spread` takes depends on the total, so
            the clinic's stream always draws for the natural (unplanted) total: planting changes
            nothing else in the clinic. A planted episode's own answers come from its own stream."""
            out = _spread(rng, n, lo, hi, natural, *shape)
            if planted_not_on_track:
                out = _spread(self.not_on_track_rng, n, lo, hi, total, *shape)
            return out

        attended = 0
        day = start
        status = "finished"
        dropout = False
        last_day = start
        wai_sums: list[int] = []
        wai_t_sums: list[int] = []
        phq: list[tuple[int, int]] = []
        gad: list[tuple[int, int]] = []
        mars_scores: list[int] = []
        dai_scores: list[int] = []
        ruptures: list[dict[str, Any]] = []
        repair: list[int] = []  # target sums for the next sessions after a rupture
        drop_total: float | None = None
        course = 0.0  # a planted non-responder's drop (set with drop_total)
        while attended < planned:
            if day > cfg.end:
                status = "active"
                break
            appt = p.next_appt()
            begin = _eastern(day, slot)
            r = rng.random()
            if r < p_noshow + p_cancel:
                self._appointment(p, appt, th, begin, "noshow" if r < p_noshow else "cancelled")
                last_day = day
                day += timedelta(days=7)
                continue
            attended += 1
            s = attended
            last_day = day
            enc_id = self._appointment(p, appt, th, begin, "fulfilled", eoc_id)

            # Patient-rated alliance for this session, as a WAI-SR sum (12-60).
            trend = min(0.035 * (s - 1), 0.35)
            normal = _iclamp(12 * _clamp(p_level + trend + rng.gauss(0, 0.18), 1, 5), 12, 60)
            ruptured = False
            if repair:
                target = repair.pop(0)
                wai_sum = max(normal, target)
            elif s >= 2 and wai_sums[-1] >= 25 and rng.random() < 0.095:
                # >= 13 sum points (> 1 point on the 1-5 mean scale), never below the scale floor of 12
                drop = min(rng.randint(13, 20), wai_sums[-1] - 12)
                wai_sum = wai_sums[-1] - drop
                ruptured = True
            else:
                wai_sum = normal
            # The clinician notices ruptures only partly, and rates through their own bias.
            c_mean = (
                c_level
                + 0.5 * trend
                + rng.gauss(0, 0.2)
                - (0.35 * (wai_sums[-1] - wai_sum) / 12 if ruptured else 0)
            )
            wai_t_sum = _iclamp(12 * _clamp(c_mean, 1, 5), 12, 60)
            srs_total = _iclamp(36 + (wai_sum / 12 - 3.9) * 5 + rng.gauss(0, 1.3), 0, 40)

            ctx = (p, enc_id, th, begin, s)
            patient_author = rng.random() < 0.8  # else a clinician keyed in the paper form
            self._qr(
                ctx,
                "wai-sr",
                _spread(rng, 12, 1, 5, wai_sum, wai_offsets, 0.45),
                begin + timedelta(minutes=52),
                patient_rated=True,
                patient_author=patient_author,
            )
            self._qr(
                ctx,
                "srs",
                _spread(rng, 4, 0, 10, srs_total, None, 0.6),
                begin + timedelta(minutes=47),
                patient_rated=True,
                patient_author=patient_author,
            )
            self._qr(
                ctx,
                "wai-sr-t",
                _spread(rng, 12, 1, 5, wai_t_sum, wai_offsets, 0.45),
                begin + timedelta(minutes=rng.randint(60, 180)),
                patient_rated=False,
            )
            wai_sums.append(wai_sum)
            wai_t_sums.append(wai_t_sum)

            if s in measure_at:
                if s == 1:
                    phq_total, gad_total = baseline, gad_base
                    natural_phq, natural_gad = baseline, gad_base
                else:
                    if drop_total is None:
                        # Early alliance (sessions 1-3) sets how far this patient's depression will fall.
                        early = sum(wai_sums[:3]) / (12 * len(wai_sums[:3]))
                        # Skill use adds to it, and counts for more when the alliance is strong.
                        skill_c = skill_level - SKILL_CENTRE
                        effects = (
                            -SKILL_EFFECTS["alliance"] * (early - ALLIANCE_CENTRE)
                            - SKILL_EFFECTS["skill_use"] * skill_c
                            - SKILL_EFFECTS["skill_use_x_alliance"] * (early - ALLIANCE_CENTRE) * skill_c
                        )
                        drop_total = _clamp(0.3 * baseline + effects + rng.gauss(0, 3.2), -4, baseline)
                        # A planted non-responder's course is flat or worsening for an average alliance
                        # and skill use (-4..+1 points), and the alliance and skill effects still act
                        # around it: planting changes who responds, not what the alliance does.
                        course = _clamp(planted_drop + effects, -4, baseline)
                    frac = (1 - math.exp(-2.5 * (s - 1) / (planned - 1))) / (1 - math.exp(-2.5))
                    phq_noise = rng.gauss(0, 1.3)
                    gad_noise = rng.gauss(0, 1.0)
                    natural_phq = _iclamp(baseline - drop_total * frac + phq_noise, 0, 27)
                    natural_gad = _iclamp(gad_base * (1 - drop_total / baseline * frac) + gad_noise, 0, 21)
                    # A planted non-responder: the same noise around its flat or worsening course.
                    course_drop = course if planted_not_on_track else drop_total
                    phq_total = _iclamp(baseline - course_drop * frac + phq_noise, 0, 27)
                    gad_total = _iclamp(gad_base * (1 - course_drop / baseline * frac) + gad_noise, 0, 21)
                ors_noise = rng.gauss(0, 2.5)
                natural_ors = _iclamp(37.5 - 1.05 * natural_phq + ors_noise, 0, 40)
                ors_total = _iclamp(37.5 - 1.05 * phq_total + ors_noise, 0, 40)
                phq.append((s, phq_total))
                gad.append((s, gad_total))
                at = begin - timedelta(minutes=rng.randint(5, 15))  # waiting-room tablet, before the session
                ors_items = items(4, 0, 10, natural_ors, ors_total, None, 1.2)
                self._qr(ctx, "ors", ors_items, at, patient_rated=True)
                phq_items = items(
                    9,
                    0,
                    3,
                    natural_phq,
                    phq_total,
                    [0, 0.2, 0.3, 0.4, 0, 0, -0.1, -0.4, -1.3],
                    0.6,
                    [1, 1.2, 1.3, 1.4, 1, 1, 0.9, 0.6, 0.1],
                )
                difficulty = _iclamp(phq_total / 7 + rng.gauss(0, 0.5), 0, 3)
                self._qr(
                    ctx,
                    "phq-9",
                    phq_items,
                    at + timedelta(minutes=2),
                    patient_rated=True,
                    difficulty=difficulty,
                    form_id=_pick(rng, cfg.phq9_shapes),
                )
                self._qr(
                    ctx,
                    "gad-7",
                    items(7, 0, 3, natural_gad, gad_total, None, 0.6),
                    at + timedelta(minutes=4),
                    patient_rated=True,
                    form_id=_pick(rng, cfg.gad7_shapes),
                )
                if s >= 2:  # skill use from the first review on: at intake no skills have been taught
                    cbtsq_total = _iclamp(skill_level + srng.gauss(0, 2.5), 16, 80)
                    self._qr(
                        ctx,
                        "cbtsq",
                        _spread(srng, 16, 1, 5, cbtsq_total, None, 0.6),
                        at + timedelta(minutes=6),
                        patient_rated=True,
                    )
                    cbtsq_totals.append((s, cbtsq_total))
            if s in med_at:
                alliance_now = 0.5 * p_level + 0.5 * wai_sum / 12
                mars = _iclamp(
                    6.2 + 1.8 * (alliance_now - 3.75) + 0.9 * p.adherence_trait + rng.gauss(0, 1.1), 0, 10
                )
                dai_pos = _iclamp(
                    6.0 + 1.6 * (alliance_now - 3.75) + 0.8 * p.adherence_trait + rng.gauss(0, 1.1), 0, 10
                )
                adherent = set(rng.sample(range(10), mars))
                positive = set(rng.sample(range(10), dai_pos))
                at = begin - timedelta(minutes=rng.randint(5, 15))
                self._qr(
                    ctx,
                    "mars",
                    [forms.MARS_ADHERENT_ANSWER[i] == (i in adherent) for i in range(10)],
                    at,
                    patient_rated=True,
                )
                self._qr(
                    ctx,
                    "dai-10",
                    [forms.DAI_POSITIVE_ANSWER[i] == (i in positive) for i in range(10)],
                    at + timedelta(minutes=3),
                    patient_rated=True,
                )
                mars_scores.append(mars)
                dai_scores.append(2 * dai_pos - 10)

            if ruptured:
                # Low-alliance patients are the ones who leave after a rupture; the rest repair it.
                p_leave = _clamp(0.2 + 0.7 * (3.7 - p_level), 0.1, 0.85)
                if s < planned and rng.random() < p_leave:
                    dropout = True
                    ruptures.append({"session": s, "drop": wai_sums[-2] - wai_sum, "outcome": "dropout"})
                else:
                    before = wai_sums[-2]
                    repair = [before] if rng.random() < 0.6 else [(before + wai_sum) // 2, before]
                    outcome = "repair" if s < planned else "open"  # no later session to repair in
                    ruptures.append({"session": s, "drop": before - wai_sum, "outcome": outcome})
            elif s < planned and rng.random() < hazard:
                dropout = True
            if dropout:
                # The patient stops coming: one or two more booked sessions are missed, the episode closes.
                for _ in range(rng.randint(1, 2)):
                    day += timedelta(days=7)
                    if day > cfg.end:
                        break
                    status_missed = "noshow" if rng.random() < 0.6 else "cancelled"
                    self._appointment(p, p.next_appt(), th, _eastern(day, slot), status_missed)
                    last_day = day
                break
            day += timedelta(days=7)

        period: dict[str, str] = {"start": start.isoformat()}
        end_day: date | None = None
        if status == "finished":
            end_day = last_day
            period["end"] = end_day.isoformat()
        self.add(
            {
                "resourceType": "EpisodeOfCare",
                "id": eoc_id,
                "status": status,
                "type": [{"text": "Outpatient psychotherapy"}],
                "patient": _ref("Patient", p.id),
                "managingOrganization": _ref("Organization", self.clinic_ids[th.clinic]),
                "period": period,
                "careManager": _ref("Practitioner", th.id),
            },
            _eastern(end_day or start, time(18, 30)),
        )
        early_p = wai_sums[:3]
        early_t = wai_t_sums[:3]
        self.truth_episodes[eoc_id] = {
            "patient": p.id,
            "therapist": th.id,
            "therapist_effect": round(th.effect, 4),
            "therapist_rating_bias": round(th.bias, 4),
            "patient_alliance_level": round(p_level, 4),
            "clinician_alliance_level": round(c_level, 4),
            "planned_sessions": planned,
            "sessions_attended": attended,
            "status": status,
            "dropout": dropout,
            "early_alliance": round(sum(early_p) / (12 * len(early_p)), 4) if early_p else None,
            "early_alliance_clinician": round(sum(early_t) / (12 * len(early_t)), 4) if early_t else None,
            "wai_sr_sums": wai_sums,
            "wai_sr_t_sums": wai_t_sums,
            "phq9": phq,
            "gad7": gad,
            "phq9_baseline": phq[0][1] if phq else None,
            "phq9_end": phq[-1][1] if phq else None,
            "skill_level": round(skill_level, 4),
            "cbtsq": cbtsq_totals,
            "planted_not_on_track": planted_not_on_track,
            "mars": mars_scores,
            "dai10": dai_scores,
            "ruptures": ruptures,
        }
        return {"id": eoc_id, "start": start, "end": end_day, "p_level": p_level, "clinic": th.clinic}

    def _appointment(
        self,
        p: _PatientCtx,
        appt: int,
        th: _Therapist,
        begin: datetime,
        status: str,
        eoc_id: str | None = None,
    ) -> str:
        appt_id = f"appt-{p.num:05d}-{appt:02d}"
        end = begin + timedelta(minutes=50)
        res: Resource = {
            "resourceType": "Appointment",
            "id": appt_id,
            "status": status,
            "serviceType": [{"text": "Psychotherapy"}],
            "start": _instant(begin),
            "end": _instant(end),
            "minutesDuration": 50,
            "participant": [
                {
                    "actor": _ref("Patient", p.id),
                    "required": "required",
                    "status": "declined" if status == "cancelled" else "accepted",
                },
                {"actor": _ref("Practitioner", th.id), "required": "required", "status": "accepted"},
            ],
        }
        if status == "cancelled":
            res["cancelationReason"] = {"text": "Cancelled by patient"}
        self.add(res, end)
        enc_id = f"enc-{p.num:05d}-{appt:02d}"
        if status == "fulfilled" and eoc_id:
            clinic = self.clinic_ids[th.clinic]
            self.add(
                {
                    "resourceType": "Encounter",
                    "id": enc_id,
                    "status": "finished",
                    "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
                    "type": [{"text": "Psychotherapy session"}],
                    "subject": _ref("Patient", p.id),
                    "episodeOfCare": [_ref("EpisodeOfCare", eoc_id)],
                    "participant": [
                        {
                            "type": [
                                {
                                    "coding": [
                                        {
                                            "system": PARTICIPATION,
                                            "code": "PPRF",
                                            "display": "primary performer",
                                        }
                                    ]
                                }
                            ],
                            "individual": _ref("Practitioner", th.id),
                        },
                    ],
                    "appointment": [_ref("Appointment", appt_id)],
                    "period": {"start": _iso(begin), "end": _iso(end)},
                    "serviceProvider": _ref("Organization", clinic),
                },
                end + timedelta(minutes=20),
            )
            self.encounters.append((enc_id, p.id, th.id, begin))
        return enc_id

    def _qr(
        self,
        ctx: tuple[_PatientCtx, str, _Therapist, datetime, int],
        instrument: str,
        values: list[int] | list[bool],
        authored: datetime,
        *,
        patient_rated: bool,
        patient_author: bool = True,
        difficulty: int | None = None,
        form_id: str | None = None,
    ) -> None:
        p, enc_id, th, _, session = ctx
        form = form_id or instrument
        layout = LAYOUTS[form]
        total = sum(int(v) for v in values) if layout.total_link_id else None
        qr_id = f"qr-{enc_id[4:]}-{QR_TAG[instrument]}"
        vals: list[int | bool | None] = list(values)
        source = _ref("Patient", p.id) if patient_rated else _ref("Practitioner", th.id)
        # `author` = who recorded the answers; `source` = who gave them (the rater).
        author = _ref("Patient", p.id) if patient_rated and patient_author else _ref("Practitioner", th.id)
        self.add(
            {
                "resourceType": "QuestionnaireResponse",
                "id": qr_id,
                "questionnaire": canonical_for(form),
                "status": "completed",
                "subject": _ref("Patient", p.id),
                "encounter": _ref("Encounter", enc_id),
                "authored": _iso(authored),
                "author": author,
                "source": source,
                "item": response_items(form, vals, total, difficulty),
            },
            authored + timedelta(minutes=1),
        )
        self.qr_info[qr_id] = _QRInfo(qr_id, instrument, form, vals, total, difficulty, session)

    # -- medication: orders and pharmacy fills

    def _medication(self, p: _PatientCtx, episodes: list[dict[str, Any]]) -> float | None:
        cfg, rng = self.cfg, self.rng
        p_level = episodes[0]["p_level"]
        # On-time refills follow the patient-felt alliance (and a personal trait), not the clinician's view.
        p_ontime = _clamp(0.72 + 0.35 * (p_level - 3.75) + 0.06 * p.adherence_trait, 0.1, 0.98)
        p_stop = 0.01 + 0.12 * (1 - p_ontime)
        drug_idx = rng.randrange(len(DRUGS))
        fill_day = max(cfg.start, episodes[0]["start"] - timedelta(days=rng.randint(0, 40)))
        switch_after = rng.randint(2, 4) if rng.random() < 0.12 else None
        prescriber = self.prescribers[p.clinic]
        mr_no = 1
        mr_id = self._med_request(
            p, mr_no, drug_idx, fill_day - timedelta(days=rng.randint(0, 3)), prescriber
        )
        fills: list[tuple[date, int, str]] = []
        k = 0
        stopped_early = False
        while fill_day <= cfg.end:
            k += 1
            self._dispense(p, k, drug_idx, fill_day, mr_id)
            fills.append((fill_day, 30, DRUGS[drug_idx][0]))
            if rng.random() < p_stop:
                stopped_early = True
                break
            if rng.random() < p_ontime:
                # On time; now and then an early refill that overlaps the previous supply.
                offset = -rng.randint(3, 8) if rng.random() < 0.15 else rng.randint(0, 3)
            else:
                offset = rng.randint(5, 25) if rng.random() < 0.85 else rng.randint(30, 60)
            fill_day = fill_day + timedelta(days=30 + offset)
            if switch_after is not None and k == switch_after and fill_day <= cfg.end:
                # Switch to another antidepressant: the first order is stopped, a new one authorises fills.
                self.index[("MedicationRequest", mr_id)]["status"] = "stopped"
                drug_idx = (drug_idx + 1 + rng.randrange(len(DRUGS) - 1)) % len(DRUGS)
                mr_no += 1
                mr_id = self._med_request(
                    p, mr_no, drug_idx, fill_day - timedelta(days=rng.randint(1, 5)), prescriber
                )
        if stopped_early:
            self.index[("MedicationRequest", mr_id)]["status"] = "completed"
        return _pdc(fills, cfg.end)

    def _med_request(self, p: _PatientCtx, no: int, drug_idx: int, authored: date, prescriber: str) -> str:
        code, display, form_code, unit = DRUGS[drug_idx]
        mr_id = f"mr-{p.num:05d}-{no}"
        self.add(
            {
                "resourceType": "MedicationRequest",
                "id": mr_id,
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {
                    "coding": [{"system": RXNORM, "code": code, "display": display}],
                    "text": display,
                },
                "subject": _ref("Patient", p.id),
                "authoredOn": authored.isoformat(),
                "requester": _ref("Practitioner", prescriber),
                "dosageInstruction": [
                    {
                        "sequence": 1,
                        "text": f"Take one {unit} by mouth once daily",
                        "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                        "route": {
                            "coding": [
                                {
                                    "system": "http://snomed.info/sct",
                                    "code": "26643006",
                                    "display": "Oral route",
                                }
                            ]
                        },
                        "doseAndRate": [
                            {
                                "doseQuantity": {
                                    "value": 1,
                                    "unit": unit,
                                    "system": DRUG_FORM,
                                    "code": form_code,
                                }
                            }
                        ],
                    }
                ],
                "dispenseRequest": {
                    "validityPeriod": {
                        "start": authored.isoformat(),
                        "end": (authored + timedelta(days=365)).isoformat(),
                    },
                    "numberOfRepeatsAllowed": 11,
                    "quantity": {"value": 30, "unit": unit, "system": DRUG_FORM, "code": form_code},
                    "expectedSupplyDuration": {"value": 30, "unit": "days", "system": UCUM, "code": "d"},
                },
            },
            _eastern(authored, time(12, 0)),
        )
        return mr_id

    def _dispense(self, p: _PatientCtx, k: int, drug_idx: int, day: date, mr_id: str) -> None:
        code, display, form_code, unit = DRUGS[drug_idx]
        handed = _eastern(day, time(self.rng.randint(9, 18), self.rng.randrange(0, 60, 5)))
        first = k == 1
        coding = {"system": RXNORM, "code": code, "display": display}
        if drug_idx == 0 and p.num % 10 == 0:  # chosen without the rng, so every other value stays put
            coding = {"system": LOCAL_FORMULARY, "code": LOCAL_FORMULARY_CODE, "display": display}
        self.add(
            {
                "resourceType": "MedicationDispense",
                "id": f"md-{p.num:05d}-{k:02d}",
                "status": "completed",
                "medicationCodeableConcept": {
                    "coding": [coding],
                    "text": display,
                },
                "subject": _ref("Patient", p.id),
                "authorizingPrescription": [_ref("MedicationRequest", mr_id)],
                "type": {
                    "coding": [
                        {
                            "system": ACT_CODE,
                            "code": "FF" if first else "RF",
                            "display": "First Fill" if first else "Refill",
                        }
                    ]
                },
                "quantity": {"value": 30, "unit": unit, "system": DRUG_FORM, "code": form_code},
                "daysSupply": {"value": 30, "unit": "d", "system": UCUM, "code": "d"},
                "whenHandedOver": _iso(handed),
            },
            handed,
        )

    # -- questionnaires

    def build_questionnaires(self) -> None:
        # With mess off the NLM form's numeric optionPrefix is repaired, so nothing invalid remains.
        quirks = self.cfg.mess_rate > 0
        for form_id in forms.FORMS:
            self.add(forms.clean_copy(form_id, quirks), self.setup_time)
        if quirks:
            self._record(
                "invalid_unused_element",
                "Questionnaire",
                "phq-9-lhc",
                "answerOption optionPrefix valueString written as a JSON number, as in NLM's published form",
                "Questionnaire.item.answerOption.extension.valueString",
            )

    # ------------------------------------------------------------ mess

    def _record(
        self,
        kind: str,
        rtype: str,
        rid: str,
        detail: str,
        element: str | None = None,
        version: str = "1",
        check: str | None = None,
    ) -> None:
        """Add one planted defect to the manifest and keep its resource out of other mess kinds.

        `element` is the FHIR path of the defect. `check` (invalid kinds only) says what finds it:
        `model` = the fhir.resources R4B model rejects it, `binding` = only a required-binding check does.
        """
        entry: dict[str, Any] = {
            "kind": kind,
            "resourceType": rtype,
            "id": rid,
            "version": version,
            "detail": detail,
        }
        if element:
            entry["element"] = element
        if kind in ("invalid_structure", "invalid_unused_element"):
            entry["check"] = check or "model"
        self.mess.append(entry)
        self.touched.add((rtype, rid))

    def _choose(self, pool: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Each untouched candidate with probability mess_rate; at least one when mess is on."""
        rate, rng = self.cfg.mess_rate, self.mess_rng
        free = [k for k in pool if k not in self.touched]
        chosen = [k for k in free if rng.random() < rate]
        if not chosen and free:
            chosen = [rng.choice(free)]
        return chosen

    def _qr_keys(
        self, instruments: tuple[str, ...] | None = None, with_total: bool = False
    ) -> list[tuple[str, str]]:
        out = []
        for qid, info in self.qr_info.items():
            if instruments and info.instrument not in instruments:
                continue
            if with_total and info.total is None:
                continue
            out.append(("QuestionnaireResponse", qid))
        return out

    def _rebuild(
        self, qr: Resource, info: _QRInfo, values: list[int | bool | None], total: int | None
    ) -> None:
        qr["item"] = response_items(info.form_id, values, total, info.difficulty)

    def plant_mess(self) -> None:
        if self.cfg.mess_rate <= 0:
            return
        rng = self.mess_rng
        self._plant_invalid_structure()
        self._plant_invalid_unused()

        for rtype, rid in self._choose(self._qr_keys()):
            info = self.qr_info[rid]
            later = copy.deepcopy(self.index[(rtype, rid)])
            later["status"] = "entered-in-error"
            self._add_phase1(later, self.recorded[(rtype, rid)] + timedelta(days=rng.randint(1, 5)))
            self._record(
                "entered_in_error",
                rtype,
                rid,
                f"version 2 of a {info.form_id} response marks it entered-in-error",
                "QuestionnaireResponse.status",
                version="2",
            )

        for rtype, rid in self._choose(self._qr_keys()):
            info = self.qr_info[rid]
            later = copy.deepcopy(self.index[(rtype, rid)])
            values = list(info.values)
            i = rng.randrange(len(values))
            old = values[i]
            if isinstance(old, bool):
                new: int | bool = not old
            else:
                lo, hi = INSTRUMENT_RANGE[info.instrument]
                assert old is not None  # noqa: S101 - clean responses answer every item
                new = old + 1 if old < hi and (old == lo or rng.random() < 0.5) else old - 1
            values[i] = new
            total = sum(int(v) for v in values if v is not None) if info.total is not None else None
            self._rebuild(later, info, values, total)
            later["status"] = "amended"
            later["authored"] = _iso(
                datetime.fromisoformat(later["authored"]) + timedelta(days=rng.randint(1, 3))
            )
            self._add_phase1(later, datetime.fromisoformat(later["authored"]) + timedelta(minutes=1))
            link_id = LAYOUTS[info.form_id].link_ids[i]
            self._record(
                "amended",
                rtype,
                rid,
                f"version 2: {link_id} changed {old} -> {new}"
                + (f", total now {total}" if total is not None else ""),
                "QuestionnaireResponse.item",
                version="2",
            )

        for rtype, rid in self._choose(self._qr_keys()):
            orig = self.index[(rtype, rid)]
            dup = copy.deepcopy(orig)
            dup["id"] = f"{rid}-dup"
            dup["authored"] = _iso(datetime.fromisoformat(orig["authored"]) + timedelta(minutes=1))
            self.add(dup, self.recorded[(rtype, rid)] + timedelta(minutes=1))
            self._record("duplicate_submission", rtype, dup["id"], f"resubmission of {rid} one minute later")
            self.touched.add((rtype, rid))

        for rtype, rid in self._choose(self._qr_keys(("phq-9", "gad-7", "wai-sr"))):
            info = self.qr_info[rid]
            n = len(info.values)
            k = rng.randint(1, 2) if rng.random() < 0.75 else rng.randint(3, 4)
            gone = sorted(rng.sample(range(n), k))
            values = [None if i in gone else v for i, v in enumerate(info.values)]
            self._rebuild(self.index[(rtype, rid)], info, values, None)
            link_ids = ", ".join(LAYOUTS[info.form_id].link_ids[i] for i in gone)
            self._record(
                "missing_items",
                rtype,
                rid,
                f"{k} of {n} items omitted ({link_ids})"
                + ("; total item omitted" if info.total is not None else "")
                + (
                    ("; proratable" if k <= 2 else "; too many missing to score")
                    if info.instrument != "wai-sr"
                    else ""
                ),
                "QuestionnaireResponse.item",
            )

        encounter_keys = [("Encounter", e[0]) for e in self.encounters]
        by_enc = {e[0]: e for e in self.encounters}
        for _, enc_id in self._choose(encounter_keys):
            _, pid, _, begin = by_enc[enc_id]
            qid = f"qr-{enc_id[4:]}-unknown"
            authored = begin + timedelta(minutes=55)
            self.add(
                {
                    "resourceType": "QuestionnaireResponse",
                    "id": qid,
                    "questionnaire": forms.UNKNOWN_QUESTIONNAIRE,
                    "status": "completed",
                    "subject": _ref("Patient", pid),
                    "encounter": _ref("Encounter", enc_id),
                    "authored": _iso(authored),
                    "source": _ref("Patient", pid),
                    "item": [
                        {
                            "linkId": "1",
                            "text": "How was the waiting room?",
                            "answer": [{"valueInteger": rng.randint(1, 5)}],
                        },
                        {
                            "linkId": "2",
                            "text": "Would you recommend us?",
                            "answer": [{"valueBoolean": rng.random() < 0.8}],
                        },
                        {"linkId": "3", "text": "Comments", "answer": [{"valueString": "Fine"}]},
                    ],
                },
                authored + timedelta(minutes=1),
            )
            self._record(
                "unknown_questionnaire",
                "QuestionnaireResponse",
                qid,
                f"response to a form no registry knows ({forms.UNKNOWN_QUESTIONNAIRE})",
            )

        for rtype, rid in self._choose(self._qr_keys(("phq-9", "gad-7"), with_total=True)):
            info = self.qr_info[rid]
            assert info.total is not None  # noqa: S101 - pool filtered on it
            top = 27 if info.instrument == "phq-9" else 21
            choices = [d for d in (-3, -2, -1, 1, 2, 3) if 0 <= info.total + d <= top]
            wrong = info.total + rng.choice(choices)
            self._rebuild(self.index[(rtype, rid)], info, list(info.values), wrong)
            self._record(
                "total_mismatch",
                rtype,
                rid,
                f"embedded total {wrong} but items sum to {info.total}",
                "QuestionnaireResponse.item",
            )

        for kind, status in (("in_progress", "in-progress"), ("stopped", "stopped")):
            for rtype, rid in self._choose(self._qr_keys()):
                info = self.qr_info[rid]
                qr = self.index[(rtype, rid)]
                n = len(info.values)
                keep = rng.randint(max(1, n // 3), n - 1)
                self._rebuild(qr, info, [v if i < keep else None for i, v in enumerate(info.values)], None)
                qr["status"] = status
                self._record(
                    kind,
                    rtype,
                    rid,
                    f"status {status}; {keep} of {n} items answered",
                    "QuestionnaireResponse.status",
                )

    def _plant_invalid_structure(self) -> None:
        rng = self.mess_rng
        pool = (
            [("Patient", r["id"]) for r in self.res["Patient"]]
            + [("Encounter", r["id"]) for r in self.res["Encounter"]]
            + self._qr_keys()
        )
        chosen = self._choose(pool)
        # Make sure every variant occurs at least once, so downstream tests can rely on each.
        for rtype in ("Patient", "Encounter"):
            if not any(t == rtype for t, _ in chosen):
                free = [k for k in pool if k[0] == rtype and k not in self.touched and k not in chosen]
                if free:
                    chosen.append(rng.choice(free))
        qr_variant = 0
        for rtype, rid in chosen:
            res = self.index[(rtype, rid)]
            if rtype == "Patient":
                res["birthDate"] = f"{res['birthDate'][:4]}-13-45"
                self._record(
                    "invalid_structure",
                    rtype,
                    rid,
                    f"birthDate {res['birthDate']!r} is not a date",
                    "Patient.birthDate",
                )
            elif rtype == "Encounter":
                del res["status"]
                self._record(
                    "invalid_structure", rtype, rid, "required element status is missing", "Encounter.status"
                )
            else:
                variant = qr_variant % 3
                qr_variant += 1
                if variant == 0:
                    res["status"] = "done"
                    self._record(
                        "invalid_structure",
                        rtype,
                        rid,
                        "status 'done' is outside the required R4 binding (fhir.resources does not check "
                        "bindings: test QR_STATUSES)",
                        "QuestionnaireResponse.status",
                        check="binding",
                    )
                elif variant == 1:
                    res["authored"] = "last tuesday"
                    self._record(
                        "invalid_structure",
                        rtype,
                        rid,
                        "authored 'last tuesday' is not a dateTime",
                        "QuestionnaireResponse.authored",
                    )
                else:
                    first = res["item"][0]
                    while "answer" not in first and first.get("item"):
                        first = first["item"][0]  # descend to an answered item, so an answer loses its linkId
                    removed = first.pop("linkId")
                    self._record(
                        "invalid_structure",
                        rtype,
                        rid,
                        f"item {removed!r} lost its required linkId",
                        "QuestionnaireResponse.item.linkId",
                    )

    def _plant_invalid_unused(self) -> None:
        pool = (
            [("Patient", r["id"]) for r in self.res["Patient"]]
            + [("Practitioner", r["id"]) for r in self.res["Practitioner"]]
            + [("Appointment", r["id"]) for r in self.res["Appointment"]]
        )
        for rtype, rid in self._choose(pool):
            res = self.index[(rtype, rid)]
            if rtype == "Appointment":
                res["minutesDuration"] = "fifty"
                self._record(
                    "invalid_unused_element",
                    rtype,
                    rid,
                    "minutesDuration 'fifty' is not a positiveInt",
                    "Appointment.minutesDuration",
                )
            else:
                res["telecom"][0]["rank"] = "first"
                self._record(
                    "invalid_unused_element",
                    rtype,
                    rid,
                    "telecom rank 'first' is not a positiveInt",
                    f"{rtype}.telecom.rank",
                )

    def _add_phase1(self, res: Resource, recorded: datetime) -> None:
        self.phase1.append(res)
        self.phase1_recorded[(res["resourceType"], res["id"])] = recorded

    # ------------------------------------------------------------ output

    def result(self) -> GeneratedData:
        phase0 = [r for t in LOAD_ORDER for r in self.res[t]]
        rank = {t: i for i, t in enumerate(LOAD_ORDER)}
        phase1 = sorted(self.phase1, key=lambda r: (rank[r["resourceType"]], r["id"]))
        versions = [phase0, phase1]
        last_updated = {f"{t}/{i}/_history/1": _instant(dt) for (t, i), dt in self.recorded.items()}
        last_updated.update(
            {f"{t}/{i}/_history/2": _instant(dt) for (t, i), dt in self.phase1_recorded.items()}
        )
        counts = Counter(r["resourceType"] for r in phase0)
        version_count = Counter(r["resourceType"] for phase in versions for r in phase)
        mess_counts = Counter(m["kind"] for m in self.mess)
        manifest: dict[str, Any] = {
            "generator": "demo.generator",
            "config": self.cfg.to_dict(),
            "load_order": list(LOAD_ORDER),
            "counts": {t: counts[t] for t in LOAD_ORDER if counts[t]},
            "version_count": {t: version_count[t] for t in LOAD_ORDER if version_count[t]},
            "phases": [len(p) for p in versions],
            "mess_counts": {k: mess_counts[k] for k in MESS_KINDS},
            "mess": self.mess,
            "truth": {
                "therapists": {
                    t.id: {
                        "clinic": self.clinic_ids[t.clinic],
                        "alliance_effect": round(t.effect, 4),
                        "rating_bias": round(t.bias, 4),
                        "outlier": t.outlier,
                    }
                    for t in self.therapists
                },
                "patients": self.truth_patients,
                "episodes": self.truth_episodes,
            },
        }
        return GeneratedData(versions=versions, manifest=manifest, last_updated=last_updated)


def generate(config: GeneratorConfig | None = None) -> GeneratedData:
    """Generate the synthetic clinic described by `config` (defaults: 300 patients, seed 42)."""
    clinic = _Clinic(config or GeneratorConfig())
    clinic.build_organisation()
    clinic.build_patients()
    clinic.build_questionnaires()
    clinic.plant_mess()
    return clinic.result()


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def effect_summary(data: GeneratedData) -> dict[str, float | None]:
    """Correlations of the built-in effects, computed from the clean scores in the manifest truth."""
    truth = data.manifest["truth"]
    eps = truth["episodes"].values()
    pat = truth["patients"]
    drop = [(e["early_alliance"], e["phq9_baseline"] - e["phq9_end"]) for e in eps if len(e["phq9"]) >= 2]
    mean = [
        (sum(e["wai_sr_sums"]) / len(e["wai_sr_sums"]), sum(e["wai_sr_t_sums"]) / len(e["wai_sr_t_sums"]), e)
        for e in eps
        if e["wai_sr_sums"]
    ]
    mars = [(p / 12, c / 12, sum(e["mars"]) / len(e["mars"])) for p, c, e in mean if e["mars"]]
    first_ep = {pid: v["episodes"][0] for pid, v in pat.items()}
    pdc = [
        (
            sum(truth["episodes"][first_ep[pid]]["wai_sr_sums"])
            / len(truth["episodes"][first_ep[pid]]["wai_sr_sums"]),
            v["pdc"],
        )
        for pid, v in pat.items()
        if v["pdc"] is not None and truth["episodes"][first_ep[pid]]["wai_sr_sums"]
    ]
    effects = [t["alliance_effect"] for t in truth["therapists"].values()]
    m = sum(effects) / len(effects)
    return {
        "r_early_alliance_vs_phq9_drop": _pearson([a for a, _ in drop], [float(d) for _, d in drop]),
        "r_patient_vs_clinician_alliance": _pearson([p for p, _, _ in mean], [c for _, c, _ in mean]),
        "r_patient_alliance_vs_mars": _pearson([p for p, _, _ in mars], [x for _, _, x in mars]),
        "r_clinician_alliance_vs_mars": _pearson([c for _, c, _ in mars], [x for _, _, x in mars]),
        "r_patient_alliance_vs_pdc": _pearson([a for a, _ in pdc], [x for _, x in pdc]),
        "therapist_effect_sd": math.sqrt(sum((e - m) ** 2 for e in effects) / max(1, len(effects) - 1)),
        "rupture_rate": _rate(eps),
    }


def rupture_truth(data: GeneratedData, repair_window: int = 2) -> dict[str, Any]:
    """The planted ruptures, counted two ways, for comparing with `marts.alliance_sessions`.

    `planted` is the generator's intent per rupture (`repair`, `dropout`, or `open`: the rupture fell
    in the last planned session). `realised` is what the clean WAI-SR sums show, by the marts' rule:
    `repaired` when a WAI-SR sum within the next `repair_window` sessions is back at or above the
    pre-rupture sum; else `dropout` / `ended` when no session followed and the episode ended
    unplanned / as planned; `pending` when the episode is still running and fewer than
    `repair_window` sessions followed; else `not_repaired` (a planned repair the patient left before
    completing: the generator's hazard can end an episode between the two repair sessions).
    """
    eps = data.manifest["truth"]["episodes"].values()
    planted: Counter[str] = Counter()
    realised: Counter[str] = Counter()
    for e in eps:
        sums = e["wai_sr_sums"]
        for r in e["ruptures"]:
            planted[r["outcome"]] += 1
            s = r["session"]  # 1-based: sums[s - 1] is the rupture, sums[s - 2] the session before
            before, later = sums[s - 2], sums[s : s + repair_window]
            running = e["status"] == "active"
            if any(x >= before for x in later):
                realised["repaired"] += 1
            elif len(later) >= repair_window or (later and not running):
                realised["not_repaired"] += 1
            elif running:
                realised["pending"] += 1
            else:
                realised["dropout" if e["dropout"] else "ended"] += 1
    sessions = sum(e["sessions_attended"] for e in eps)
    ruptures = sum(planted.values())
    return {
        "sessions": sessions,
        "ruptures": ruptures,
        "rupture_rate": ruptures / sessions if sessions else None,
        "planted": dict(planted),
        "realised": dict(realised),
    }


def _rate(eps: Any) -> float | None:
    sessions = sum(e["sessions_attended"] for e in eps)
    ruptures = sum(len(e["ruptures"]) for e in eps)
    return ruptures / sessions if sessions else None


def planted_outlier_therapists(data: GeneratedData) -> dict[str, str]:
    """The therapists planted as clear alliance outliers (practitioner id -> 'high' or 'low'): the truth
    a funnel plot should find, against the rest drawn from N(0, 0.15) around the practice."""
    return {tid: t["outlier"] for tid, t in data.manifest["truth"]["therapists"].items() if t.get("outlier")}
