"""Scale generator: Bulk-style NDJSON for N QuestionnaireResponses with their clinic around them.

`python -m benchmarks.generate --scale 100000` writes `benchmarks/data/100000/` with one
`<ResourceType>.ndjson` per type the pipeline lands (Patient, Practitioner, PractitionerRole,
EpisodeOfCare, Appointment, Encounter, MedicationRequest, MedicationDispense, QuestionnaireResponse,
Questionnaire) and a `manifest.json` (config, line counts, every planted bad record).

Unlike `demo.generator` (a latent clinical model, too slow at a million responses) this is
templates plus counters: per patient an episode, weekly sessions (appointment and encounter), and at
each session the alliance forms (WAI-SR, SRS, therapist WAI), every third session the outcome forms
(ORS, PHQ-9, GAD-7, each on the real-world form shapes of `demo.forms`), and for patients on
medication MARS and DAI-10 plus monthly dispenses. Item trees come from `demo.forms.response_items`,
so every response shape the pipeline meets in the demo occurs here too.

- Streaming: resources are written as they are made; memory does not grow with the scale.
- Deterministic: one `random.Random(seed)` stream for the clinic, one for planted defects and one for
  CBT skill-use answers; the same (scale, seed, generator version) gives byte-identical files.
- Cached: a folder whose manifest has the same key is reused; a new one is written beside it and
  renamed into place, so an interrupted run never leaves half a data set behind.
- Planted defects (`manifest["planted"]`): invalid structure that the structural validator must
  reject (QuestionnaireResponse status outside the binding, an authored date that is not a date, an
  answered item without linkId; Patient birthDate 13-45; Encounter without status), invalid elements
  the pipeline does not read (must land with findings), one truncated line per file of Patient and
  QuestionnaireResponse (unparseable), version 2 of some responses (amended or entered-in-error) and
  responses to a form no registry knows.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import orjson

from benchmarks.common import DATA_DIR, read_json, write_json
from demo import forms
from demo.forms import LAYOUTS, canonical_for, response_items
from demo.generator import DRUGS, FAMILY_NAMES, FEMALE_NAMES, MALE_NAMES, GeneratorConfig
from pipelines.settings import RESOURCE_TYPES

# Bump when the output for a given (scale, seed) changes, so cached folders are regenerated.
GENERATOR_VERSION = 2  # 2: the CBT Skills Questionnaire at every outcome review after intake

TYPES: tuple[str, ...] = RESOURCE_TYPES  # the pipeline's own list: one NDJSON file per type
TZ = timezone(timedelta(hours=-5))  # the clinic's local offset, written into dateTimes
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
DRUG_FORM = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm"
MRN = "http://alliance-qi.example.org/fhir/sid/mrn"
NPI = "http://hl7.org/fhir/sid/us-npi"
QR_TAG = {"wai-sr": "wai", "wai-sr-t": "wait", "srs": "srs", "ors": "ors", "phq-9": "phq9", "gad-7": "gad7"}
QR_TAG.update({"mars": "mars", "dai-10": "dai", "cbtsq": "cbtsq"})
_DEFAULTS = GeneratorConfig()

Resource = dict[str, Any]


@dataclass(frozen=True)
class ScaleConfig:
    """What to generate: `responses` distinct QuestionnaireResponses (ids), plus their context."""

    responses: int = 100_000
    seed: int = 42
    bad_rate: float = 0.002  # QR / Patient / Encounter versions with invalid structure (rejected)
    unused_rate: float = 0.002  # Patient / Appointment with an invalid element nobody reads (landed)
    version2_rate: float = 0.005  # responses that get a version 2 (amended or entered-in-error)
    unknown_rate: float = 0.002  # responses to a form no registry knows (unmapped downstream)
    therapists: int = 40
    clinics: int = 4
    medication_rate: float = 0.5
    start: str = "2026-01-05"

    def __post_init__(self) -> None:
        if self.responses < 1:
            raise ValueError("responses must be at least 1")
        for name in ("bad_rate", "unused_rate", "version2_rate", "unknown_rate", "medication_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.therapists < self.clinics or self.clinics < 1:
            raise ValueError("need at least one clinic and one therapist per clinic")

    def key(self) -> dict[str, Any]:
        """What identifies a cached data set: the config and the generator version."""
        return {"generator_version": GENERATOR_VERSION, **asdict(self)}


def _ref(resource_type: str, rid: str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{rid}"}


def _instant(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


class _Writer:
    """One buffered NDJSON file per resource type, stamping meta (versionId, lastUpdated) on write."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, IO[bytes]] = {
            t: open(folder / f"{t}.ndjson", "wb", buffering=1 << 20) for t in TYPES
        }
        self.lines: Counter[str] = Counter()

    def write(self, res: Resource, when: datetime, version: str = "1") -> None:
        out: Resource = {"resourceType": res["resourceType"], "id": res["id"]}
        out["meta"] = {"versionId": version, "lastUpdated": _instant(when)}
        out.update((k, v) for k, v in res.items() if k not in ("resourceType", "id", "meta"))
        self.files[res["resourceType"]].write(orjson.dumps(out) + b"\n")
        self.lines[res["resourceType"]] += 1

    def write_text(self, resource_type: str, text: bytes) -> None:
        self.files[resource_type].write(text + b"\n")
        self.lines[resource_type] += 1

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class _Clinic:
    """Emits the clinic patient by patient until `responses` responses have been written."""

    def __init__(self, cfg: ScaleConfig, writer: _Writer) -> None:
        self.cfg = cfg
        self.out = writer
        self.rng = random.Random(cfg.seed)
        self.mess = random.Random(cfg.seed * 7919 + 1)  # defects have their own stream
        # CBT skill use has its own stream too: adding it left every other draw of version 1 alone
        self.skills = random.Random(cfg.seed * 104729 + 3)
        self.start = date.fromisoformat(cfg.start)
        self.setup = datetime.combine(self.start - timedelta(days=30), datetime.min.time(), TZ)
        self.planted: list[dict[str, Any]] = []
        self.responses = 0
        self.versions2 = 0
        self.qr_variant = 0
        self.forms_used: Counter[str] = Counter()

    # ---------------- helpers
    def _plant(self, kind: str, rtype: str, rid: str, expect: str, detail: str, version: str = "1") -> None:
        self.planted.append(
            {
                "kind": kind,
                "resourceType": rtype,
                "id": rid,
                "version": version,
                "expect": expect,
                "detail": detail,
            }
        )

    def _pick_form(self, shapes: tuple[tuple[str, float], ...]) -> str:
        r = self.rng.random()
        acc = 0.0
        for form_id, weight in shapes:
            acc += weight
            if r < acc:
                return form_id
        return shapes[-1][0]

    # ---------------- fixed parts
    def organisation(self) -> None:
        rng = self.rng
        for t in range(1, self.cfg.therapists + 1):
            pid = f"prac-{t:04d}"
            female = rng.random() < 0.6
            self.out.write(
                {
                    "resourceType": "Practitioner",
                    "id": pid,
                    "identifier": [{"system": NPI, "value": f"{1900000000 + t * 7919}"}],
                    "active": True,
                    "name": [
                        {
                            "family": rng.choice(FAMILY_NAMES),
                            "given": [rng.choice(FEMALE_NAMES if female else MALE_NAMES)],
                            "prefix": ["Dr"],
                        }
                    ],
                    "telecom": [
                        {"system": "email", "value": f"{pid}@alliance-qi.example.org", "use": "work"}
                    ],
                    "gender": "female" if female else "male",
                },
                self.setup,
            )
            self.out.write(
                {
                    "resourceType": "PractitionerRole",
                    "id": f"role-{t:04d}",
                    "active": True,
                    "practitioner": _ref("Practitioner", pid),
                    "organization": {
                        "reference": f"Organization/org-clinic-{(t - 1) % self.cfg.clinics + 1:02d}"
                    },
                    "code": [{"text": "Psychotherapist"}],
                },
                self.setup,
            )
        for form_id in forms.FORMS:
            # The real-world quirks stay (NLM's numeric optionPrefix): it must land with findings.
            self.out.write(forms.clean_copy(form_id, quirks=True), self.setup)
        self._plant(
            "invalid_unused_element",
            "Questionnaire",
            "phq-9-lhc",
            "landed_with_findings",
            "answerOption optionPrefix valueString written as a JSON number (NLM's published form)",
        )

    # ---------------- one patient
    def patient(self, n: int) -> None:
        cfg, rng = self.cfg, self.rng
        pid = f"pat-{n:07d}"
        clinic = rng.randrange(cfg.clinics)
        therapist = f"prac-{clinic + 1 + cfg.clinics * rng.randrange(cfg.therapists // cfg.clinics):04d}"
        on_med = rng.random() < cfg.medication_rate
        first = self.start + timedelta(days=rng.randrange(0, 200))
        female = rng.random() < 0.6
        patient: Resource = {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"use": "usual", "system": MRN, "value": f"MRN{1000000 + n}"}],
            "active": True,
            "name": [
                {
                    "use": "official",
                    "family": rng.choice(FAMILY_NAMES),
                    "given": [rng.choice(FEMALE_NAMES if female else MALE_NAMES)],
                }
            ],
            "telecom": [
                {"system": "phone", "value": f"555-{rng.randint(100, 999)}-{n % 10000:04d}", "rank": 1}
            ],
            "gender": "female" if female else "male",
            "birthDate": (self.start - timedelta(days=rng.randint(18 * 365, 72 * 365))).isoformat(),
            "managingOrganization": {"reference": f"Organization/org-clinic-{clinic + 1:02d}"},
        }
        if self.mess.random() < cfg.bad_rate:
            patient["birthDate"] = patient["birthDate"][:4] + "-13-45"
            self._plant("invalid_structure", "Patient", pid, "rejected", "birthDate month 13")
        elif self.mess.random() < cfg.unused_rate:
            patient["telecom"][0]["rank"] = "first"
            self._plant(
                "invalid_unused_element", "Patient", pid, "landed_with_findings", "telecom rank 'first'"
            )
        self.out.write(patient, datetime.combine(first - timedelta(days=7), datetime.min.time(), TZ))

        eoc = f"eoc-{n:07d}-1"
        planned = rng.randint(6, 16)
        level = rng.gauss(3.8, 0.5)  # the patient's alliance level on the 1-5 WAI scale
        phq_base = rng.randint(5, 24)
        slot = rng.choice((8, 9, 10, 11, 13, 14, 15, 16))
        day = first
        attended = 0
        appt_no = 0
        med_at = {1, (planned + 1) // 2, planned} if on_med else set()
        while attended < planned and self.responses < cfg.responses:
            appt_no += 1
            begin = datetime(day.year, day.month, day.day, slot, 0, tzinfo=TZ)
            end = begin + timedelta(minutes=50)
            appt_id = f"appt-{n:07d}-{appt_no:02d}"
            status = (
                "fulfilled" if rng.random() >= 0.08 else ("noshow" if rng.random() < 0.6 else "cancelled")
            )
            self._appointment(appt_id, pid, therapist, begin, end, status)
            day += timedelta(days=7)
            if status != "fulfilled":
                continue
            attended += 1
            enc_id = f"enc-{n:07d}-{appt_no:02d}"
            self._encounter(enc_id, pid, therapist, eoc, appt_id, clinic, begin, end)
            ctx = (n, pid, therapist, enc_id, begin)
            wai = [min(5, max(1, round(level + rng.gauss(0, 0.6)))) for _ in range(12)]
            self._qr(ctx, "wai-sr", wai, 52, patient_rated=True)
            srs = [min(10, max(0, round(2 * level + 1 + rng.gauss(0, 1.2)))) for _ in range(4)]
            self._qr(ctx, "srs", srs, 47, patient_rated=True)
            wait = [min(5, max(1, round(level + 0.1 + rng.gauss(0, 0.5)))) for _ in range(12)]
            self._qr(ctx, "wai-sr-t", wait, 90, patient_rated=False)
            if attended % 3 == 1 or attended == planned:
                phq_now = max(0, phq_base - attended // 2)
                p = phq_now / 27
                self._qr(
                    ctx, "ors", [min(10, max(0, round(9 - 6 * p + rng.gauss(0, 1.5)))) for _ in range(4)], -10
                )
                phq = [min(3, max(0, round(3 * p + rng.gauss(0, 0.6)))) for _ in range(9)]
                self._qr(
                    ctx, self._pick_form(_DEFAULTS.phq9_shapes), phq, -8, difficulty=min(3, round(3 * p))
                )
                gad = [min(3, max(0, round(2.6 * p + rng.gauss(0, 0.6)))) for _ in range(7)]
                self._qr(ctx, self._pick_form(_DEFAULTS.gad7_shapes), gad, -6)
                if attended >= 2:  # skill use from the first review on (none taught at intake)
                    skill = self.skills.gauss(3.0, 0.6)
                    cbtsq = [min(5, max(1, round(skill + self.skills.gauss(0, 0.7)))) for _ in range(16)]
                    self._qr(ctx, "cbtsq", cbtsq, -5)
            if attended in med_at:
                self._qr(ctx, "mars", [rng.random() < 0.5 for _ in range(10)], -12)
                self._qr(ctx, "dai-10", [rng.random() < 0.6 for _ in range(10)], -11)
            if self.mess.random() < cfg.unknown_rate:
                self._unknown(ctx)
        last_day = day - timedelta(days=7)
        period: dict[str, str] = {"start": first.isoformat()}
        if attended >= planned:
            period["end"] = last_day.isoformat()
        self.out.write(
            {
                "resourceType": "EpisodeOfCare",
                "id": eoc,
                "status": "finished" if "end" in period else "active",
                "type": [{"text": "Outpatient psychotherapy"}],
                "patient": _ref("Patient", pid),
                "managingOrganization": {"reference": f"Organization/org-clinic-{clinic + 1:02d}"},
                "period": period,
                "careManager": _ref("Practitioner", therapist),
            },
            datetime.combine(last_day, datetime.min.time(), TZ) + timedelta(hours=18),
        )
        if on_med:
            self._medication(n, pid, first, last_day)

    def _appointment(
        self, appt_id: str, pid: str, th: str, begin: datetime, end: datetime, status: str
    ) -> None:
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
                    "actor": _ref("Patient", pid),
                    "required": "required",
                    "status": "declined" if status == "cancelled" else "accepted",
                },
                {"actor": _ref("Practitioner", th), "required": "required", "status": "accepted"},
            ],
        }
        if self.mess.random() < self.cfg.unused_rate:
            res["minutesDuration"] = "fifty"
            self._plant(
                "invalid_unused_element",
                "Appointment",
                appt_id,
                "landed_with_findings",
                "minutesDuration 'fifty'",
            )
        self.out.write(res, end)

    def _encounter(
        self,
        enc_id: str,
        pid: str,
        th: str,
        eoc: str,
        appt_id: str,
        clinic: int,
        begin: datetime,
        end: datetime,
    ) -> None:
        res: Resource = {
            "resourceType": "Encounter",
            "id": enc_id,
            "status": "finished",
            "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
            "type": [{"text": "Psychotherapy session"}],
            "subject": _ref("Patient", pid),
            "episodeOfCare": [_ref("EpisodeOfCare", eoc)],
            "participant": [
                {
                    "type": [
                        {
                            "coding": [
                                {"system": PARTICIPATION, "code": "PPRF", "display": "primary performer"}
                            ]
                        }
                    ],
                    "individual": _ref("Practitioner", th),
                }
            ],
            "appointment": [_ref("Appointment", appt_id)],
            "period": {"start": _iso(begin), "end": _iso(end)},
            "serviceProvider": {"reference": f"Organization/org-clinic-{clinic + 1:02d}"},
        }
        if self.mess.random() < self.cfg.bad_rate:
            del res["status"]
            self._plant("invalid_structure", "Encounter", enc_id, "rejected", "required status missing")
        self.out.write(res, end + timedelta(minutes=20))

    def _qr(
        self,
        ctx: tuple[int, str, str, str, datetime],
        form_id: str,
        values: list[int] | list[bool],
        minutes: int,
        *,
        patient_rated: bool = True,
        difficulty: int | None = None,
    ) -> None:
        if self.responses >= self.cfg.responses:
            return
        _, pid, th, enc_id, begin = ctx
        layout = LAYOUTS[form_id]
        instrument = layout.instrument
        vals: list[int | bool | None] = list(values)
        total = sum(int(v) for v in values) if layout.total_link_id else None
        qr_id = f"qr-{enc_id[4:]}-{QR_TAG[instrument]}"
        authored = begin + timedelta(minutes=minutes)
        res: Resource = {
            "resourceType": "QuestionnaireResponse",
            "id": qr_id,
            "questionnaire": canonical_for(form_id),
            "status": "completed",
            "subject": _ref("Patient", pid),
            "encounter": _ref("Encounter", enc_id),
            "authored": _iso(authored),
            "author": _ref("Patient", pid) if patient_rated else _ref("Practitioner", th),
            "source": _ref("Patient", pid) if patient_rated else _ref("Practitioner", th),
            "item": response_items(form_id, vals, total, difficulty),
        }
        self.responses += 1
        self.forms_used[form_id] += 1
        if self.mess.random() < self.cfg.bad_rate:
            self._invalid_qr(res)
            self.out.write(res, authored + timedelta(minutes=1))
            return
        self.out.write(res, authored + timedelta(minutes=1))
        if self.mess.random() < self.cfg.version2_rate:
            self._version2(res, layout, vals, total, difficulty, authored)

    def _invalid_qr(self, res: Resource) -> None:
        variant = self.qr_variant % 3
        self.qr_variant += 1
        rid = res["id"]
        if variant == 0:
            res["status"] = "done"
            self._plant(
                "invalid_structure", "QuestionnaireResponse", rid, "rejected", "status outside the binding"
            )
        elif variant == 1:
            res["authored"] = "last tuesday"
            self._plant(
                "invalid_structure", "QuestionnaireResponse", rid, "rejected", "authored is not a dateTime"
            )
        else:
            first = res["item"][0]
            while "answer" not in first and first.get("item"):
                first = first["item"][0]
            first.pop("linkId")
            self._plant(
                "invalid_structure", "QuestionnaireResponse", rid, "rejected", "answered item lost linkId"
            )

    def _version2(
        self,
        res: Resource,
        layout: forms.FormLayout,
        vals: list[int | bool | None],
        total: int | None,
        difficulty: int | None,
        authored: datetime,
    ) -> None:
        later = copy.deepcopy(res)
        if self.mess.random() < 0.5:
            later["status"] = "entered-in-error"
            kind = "entered_in_error"
        else:
            i = self.mess.randrange(len(vals))
            old = vals[i]
            new: int | bool = (
                (not old) if isinstance(old, bool) else (int(old or 0) + 1 if (old or 0) < 3 else 1)
            )
            vals = [*vals[:i], new, *vals[i + 1 :]]
            new_total = sum(int(v) for v in vals if v is not None) if total is not None else None
            later["item"] = response_items(layout.form_id, vals, new_total, difficulty)
            later["status"] = "amended"
            kind = "amended"
        self.out.write(later, authored + timedelta(days=2), version="2")
        self.versions2 += 1
        self._plant(kind, "QuestionnaireResponse", res["id"], "landed", f"version 2 {kind}", version="2")

    def _unknown(self, ctx: tuple[int, str, str, str, datetime]) -> None:
        if self.responses >= self.cfg.responses:
            return
        _, pid, _, enc_id, begin = ctx
        qid = f"qr-{enc_id[4:]}-unknown"
        authored = begin + timedelta(minutes=55)
        self.out.write(
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
                    {"linkId": "1", "text": "How was the waiting room?", "answer": [{"valueInteger": 4}]},
                    {"linkId": "2", "text": "Would you recommend us?", "answer": [{"valueBoolean": True}]},
                ],
            },
            authored + timedelta(minutes=1),
        )
        self.responses += 1
        self.forms_used["unknown"] += 1
        self._plant("unknown_questionnaire", "QuestionnaireResponse", qid, "landed", "form no registry knows")

    def _medication(self, n: int, pid: str, first: date, last: date) -> None:
        rng = self.rng
        code, display, form_code, unit = DRUGS[rng.randrange(len(DRUGS))]
        mr_id = f"mr-{n:07d}-1"
        authored = first - timedelta(days=rng.randint(0, 20))
        self.out.write(
            {
                "resourceType": "MedicationRequest",
                "id": mr_id,
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {
                    "coding": [{"system": RXNORM, "code": code, "display": display}],
                    "text": display,
                },
                "subject": _ref("Patient", pid),
                "authoredOn": authored.isoformat(),
                "dosageInstruction": [{"sequence": 1, "text": f"Take one {unit} by mouth once daily"}],
                "dispenseRequest": {
                    "numberOfRepeatsAllowed": 11,
                    "quantity": {"value": 30, "unit": unit, "system": DRUG_FORM, "code": form_code},
                    "expectedSupplyDuration": {"value": 30, "unit": "days", "system": UCUM, "code": "d"},
                },
            },
            datetime.combine(authored, datetime.min.time(), TZ) + timedelta(hours=12),
        )
        day = authored + timedelta(days=1)
        k = 0
        while day <= last + timedelta(days=30) and k < 12:
            k += 1
            handed = datetime(day.year, day.month, day.day, 9 + rng.randrange(9), 0, tzinfo=TZ)
            self.out.write(
                {
                    "resourceType": "MedicationDispense",
                    "id": f"md-{n:07d}-{k:02d}",
                    "status": "completed",
                    "medicationCodeableConcept": {
                        "coding": [{"system": RXNORM, "code": code, "display": display}],
                        "text": display,
                    },
                    "subject": _ref("Patient", pid),
                    "authorizingPrescription": [_ref("MedicationRequest", mr_id)],
                    "quantity": {"value": 30, "unit": unit, "system": DRUG_FORM, "code": form_code},
                    "daysSupply": {"value": 30, "unit": "d", "system": UCUM, "code": "d"},
                    "whenHandedOver": _iso(handed),
                },
                handed,
            )
            day += timedelta(days=30 + (rng.randint(-3, 3) if rng.random() < 0.8 else rng.randint(5, 25)))


def folder_for(scale: int, base: Path = DATA_DIR) -> Path:
    """Where the data set for `scale` responses lives."""
    return base / str(scale)


def is_cached(folder: Path, cfg: ScaleConfig) -> bool:
    """True when `folder` holds a complete data set generated with the same key."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return bool(read_json(manifest).get("key") == cfg.key())
    except (OSError, ValueError):
        return False


def generate(cfg: ScaleConfig, folder: Path) -> dict[str, Any]:
    """Write the data set for `cfg` into `folder` (replacing what is there) and return its manifest."""
    started = time.monotonic()
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    writer = _Writer(tmp)
    clinic = _Clinic(cfg, writer)
    try:
        clinic.organisation()
        n = 0
        while clinic.responses < cfg.responses:
            n += 1
            clinic.patient(n)
        # One truncated line in two files: unparseable input must be kept, never dropped.
        for rtype in ("Patient", "QuestionnaireResponse"):
            writer.write_text(rtype, b'{"resourceType": "' + rtype.encode() + b'", "id": ')
            clinic._plant(
                "unparseable", rtype, "", "unparseable", "truncated JSON line at the end of the file"
            )
    finally:
        writer.close()
    planted_counts = Counter(f"{p['resourceType']}:{p['kind']}" for p in clinic.planted)
    manifest = {
        "key": cfg.key(),
        "responses": clinic.responses,
        "response_versions_2": clinic.versions2,
        "patients": n,
        "lines": {t: writer.lines[t] for t in TYPES},
        "total_lines": sum(writer.lines.values()),
        "bytes": {t: (tmp / f"{t}.ndjson").stat().st_size for t in TYPES},
        "forms": dict(sorted(clinic.forms_used.items())),
        "planted_counts": dict(sorted(planted_counts.items())),
        "planted": clinic.planted,
        "seconds": round(time.monotonic() - started, 2),
    }
    write_json(tmp / "manifest.json", manifest)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return manifest


def ensure_dataset(cfg: ScaleConfig, folder: Path | None = None) -> tuple[Path, dict[str, Any], bool]:
    """The folder for `cfg`, generating it unless a cached copy with the same key exists.

    Returns (folder, manifest, reused).
    """
    target = folder or folder_for(cfg.responses)
    if is_cached(target, cfg):
        return target, read_json(target / "manifest.json"), True
    return target, generate(cfg, target), False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate Bulk-style NDJSON for the benchmarks")
    parser.add_argument("--scale", type=int, default=100_000, help="number of QuestionnaireResponses")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=None, help="folder (default benchmarks/data/<scale>)")
    parser.add_argument("--force", action="store_true", help="regenerate even when cached")
    args = parser.parse_args(argv)
    cfg = ScaleConfig(responses=args.scale, seed=args.seed)
    target = args.out or folder_for(args.scale)
    if args.force and target.exists():
        shutil.rmtree(target)
    folder, manifest, reused = ensure_dataset(cfg, target)
    print(
        f"{'reused' if reused else 'generated'} {folder}: {manifest['responses']} responses, "
        f"{manifest['total_lines']} lines, {len(manifest['planted'])} planted records "
        f"({manifest['seconds']}s to generate)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
