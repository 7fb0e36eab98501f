"""An outside transfer table: intermediate-task transfer measured by others, one row per (target,
source, setting) with `pc`, the mean relative change of the target's score after training on the
source first (0.05 = 5% better than the target alone). The one this project judges against is
TaskWeb's (Kim et al. 2023) among MRPC, QNLI, QQP, RTE and STS-B (../shared/data/transfer/,
its README). Here: reading it, and a support's measured transfer to the table's other targets,
the signal the support ranking (recommend.py) puts first."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import BadValue

COLUMNS = ("target", "source", "setting", "pc")
DEFAULT_SETTING = "finetune/roberta"  # RoBERTa-base, full fine-tuning: the setting closest to the paper's


def read_table(path: str | Path) -> pd.DataFrame:
    """The table's rows (columns target, source, setting, pc at least); a bad file is a BadValue
    naming it."""
    path = Path(path)
    if not path.is_file():
        raise BadValue(f"{path}: transfer table not found")
    try:
        df = pd.read_csv(path, dtype={"target": str, "source": str, "setting": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise BadValue(f"{path}: not a readable CSV table ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise BadValue(f"{path}: transfer table lacks column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})")
    pc = pd.to_numeric(df["pc"], errors="coerce")
    if pc.isna().any():
        row = int(pc.isna().to_numpy().argmax())
        raise BadValue(f"{path}: line {row + 2}: pc {df['pc'].iloc[row]!r} is not a number")
    df = df.assign(pc=pc.astype(float))
    df.attrs["path"] = str(path)
    return df


def setting_rows(table: pd.DataFrame, setting: str = DEFAULT_SETTING) -> pd.DataFrame:
    """The (target, source, pc) rows of one setting; BadValue naming the settings it has."""
    rows = table[table["setting"] == setting]
    if rows.empty:
        raise BadValue(f"{table.attrs.get('path', 'transfer table')}: no setting '{setting}'; "
                       f"it has: {', '.join(sorted(set(table['setting'])))}")
    return rows[["target", "source", "pc"]].reset_index(drop=True)


def measured_elsewhere(rows: pd.DataFrame, target: str, candidates) -> dict[str, float]:
    """Each candidate's mean measured transfer (pc) as a support to the table's targets other than
    `target` (and itself): nothing measured on `target` enters. Candidates the table does not have
    as a support are left out."""
    other = rows[(rows["target"] != target) & rows["source"].isin(list(candidates))]
    return other.groupby("source")["pc"].mean().to_dict()


def average_elsewhere(rows: pd.DataFrame, target: str) -> float:
    """The mean measured transfer of every pair not on `target`: what a support the table does not
    know is expected to do."""
    return float(rows.loc[rows["target"] != target, "pc"].mean())


def support_scores(rows: pd.DataFrame, target: str, candidates) -> list[float]:
    """The ranking's first key for each candidate: its measured_elsewhere, or average_elsewhere for
    a candidate the table does not have as a support."""
    known, average = measured_elsewhere(rows, target, candidates), average_elsewhere(rows, target)
    return [known.get(c, average) for c in candidates]
