"""Writes demo/bundles/*.json: the LIS messages of a 12-patient synthetic cohort (bench/cohort.py, seed 2025).

Run `python demo/generate.py` after changing the generator; the JSON files are committed so `make run` needs
no generator. File names sort in ingest order (`<patient index>-<message no.>-<MRN>-<kind>.json`). The
patients it prints are those of the first block of bench/cohort.py: every site, study and historical-control
patients, one ineligible and one pending (incomplete) patient, and each kind of noise. Values are
illustrative, not patient data.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cohort import Arm, Case, Screening, generate  # noqa: E402

OUT = ROOT / "demo" / "bundles"
PATIENTS, SEED = 12, 2025


def describe(case: Case) -> str:
    if case.screening is Screening.INELIGIBLE:
        status = f"screened, ineligible: {case.reason}"
    elif case.screening is Screening.PENDING:
        status = f"screened, eligibility incomplete: {case.reason}"
    elif case.arm is Arm.CONTROL:
        status = "historical control"
    else:
        status = f"enrolled, eligible ({case.risk} risk)"
    extras = sorted([*(n.value for n in case.noise), *(e.value for e, _ in case.events)])
    return f"{case.mrn}  {case.site:<14} {status}" + (f"; {', '.join(extras)}" if extras else "")


def main() -> None:
    cohort = generate(patients=PATIENTS, seed=SEED)
    written = cohort.write_bundles(OUT)
    for case in cohort.cases():
        print(describe(case))
    print(f"{written} bundles for {PATIENTS} patients in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
