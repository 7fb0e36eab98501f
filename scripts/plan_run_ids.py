"""Every profile's planned run ids, one line each ("<profile file> <run id>"), sorted: the check
that a change of defaults or schema left the ids of existing studies as they were.

    .venv/bin/python scripts/plan_run_ids.py > before.txt   # on the old commit
    .venv/bin/python scripts/plan_run_ids.py > after.txt    # on the new one
    diff before.txt after.txt                                # no output: no run id changed

Profiles: params/*.yaml and examples/*/study.yaml, planned in Python (what `mtlstudy plan`
lists in its first column), without data or model.
"""
from __future__ import annotations

from pathlib import Path

from mtlstudy.plan import make_plan
from mtlstudy.profile import load_profile

REPO = Path(__file__).resolve().parent.parent


def profile_files() -> list[Path]:
    return sorted(REPO.glob("params/*.yaml")) + sorted(REPO.glob("examples/*/study.yaml"))


def main() -> None:
    for path in profile_files():
        profile, user = load_profile(path)
        for run_id in sorted(r.run_id for r in make_plan(profile, user)):
            print(path.relative_to(REPO), run_id)


if __name__ == "__main__":
    main()
