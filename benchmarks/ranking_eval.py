"""The support ranking judged on transfer measured by others, and on our own studies.

On TaskWeb's table (../shared/data/transfer/taskweb_glue.csv: MRPC, QNLI, QQP, RTE, STS-B, 20
ordered pairs, seven settings), for every setting: Regret@1, Regret@3, NDCG and Spearman averaged
over the five targets, of recommend's ranking with the table (each support's measured transfer to
the other four targets) and without it (text similarity and size ratio), the ranking before this
change (with the label-space match), a ridge regression fitted leave one target out, each signal
alone, random's exact expectation and the oracle; per target for finetune/roberta; what the ridge
learned. Texts from ../shared/data/glue (QNLI's dev file, QQP's sample), 256 a task through the
offline MiniLM. Then ranking.evaluate on glue_cpu (docs/glue_cpu/results.csv) and the demo
(docs/checks/demo_results_issue27_restructure.csv, the current demo's results), without and with
the table.

    python benchmarks/ranking_eval.py [--data ../shared/data] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from mtlstudy import ranking, transfer

REPO = Path(__file__).resolve().parents[1]
STUDIES = {"glue_cpu": (REPO / "docs/glue_cpu/results.csv", {"sst2": 1800, "cola": 1710, "stsb": 1150, "mrpc": 1100}),
           "demo": (REPO / "docs/checks/demo_results_issue27_restructure.csv", {"gen_nli": 224, "gen_para": 176, "gen_sent": 96})}


def md(df: pd.DataFrame, index: bool = False) -> str:
    """A Markdown table (numbers to 3 decimals), without the tabulate package."""
    df = df.reset_index() if index else df
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)])


def on_table(data: Path, cache_dir: Path | None) -> None:
    table = transfer.read_table(data / "transfer/taskweb_glue.csv")
    signals = ranking.table_signals(transfer.setting_rows(table), data / "glue", cache_dir=cache_dir)
    print("## signals (texts from", data / "glue", ")\n")
    print(md(signals))
    for setting in [transfer.DEFAULT_SETTING] + sorted(set(table["setting"]) - {transfer.DEFAULT_SETTING}):
        rows = transfer.setting_rows(table, setting)
        judged = ranking.compare_on_table(rows, signals)
        print(f"\n## {setting}: means over {rows['target'].nunique()} targets\n")
        print(md(ranking.table_means(judged)))
        if setting == transfer.DEFAULT_SETTING:
            print("\nper target (top pick, Regret@1 %):\n")
            wide = judged.assign(cell=judged["top1"] + " " + judged["regret1"].map("{:.2f}".format))
            print(md(wide.pivot(index="ranking", columns="target", values="cell")
                     .reindex(judged["ranking"].unique()), index=True))
            print("\nridge weights fitted on all five targets (standardized signals):",
                  {k: round(v, 4) for k, v in ranking.fitted_weights(rows, signals).items()})


def on_studies(data: Path, cache_dir: Path | None) -> None:
    rows = transfer.setting_rows(transfer.read_table(data / "transfer/taskweb_glue.csv"))
    for name, (results, sizes) in STUDIES.items():
        with tempfile.TemporaryDirectory() as tmp:
            study = Path(tmp) / name
            study.mkdir()
            (study / "results.csv").write_bytes(results.read_bytes())
            data_source = ({"source": "glue_dir", "glue_dir": str(data / "glue")} if name == "glue_cpu"
                           else {"generated_sizes": sizes, "generated_dev_size": 96})
            (study / "study.json").write_text(json.dumps({"name": name, "task_sizes": sizes,
                                                          "profile": {"data": data_source}}))
            signals = ranking.study_signals(study, cache_dir=cache_dir)
            for label, tr in (("without the table", None), ("with the table (finetune/roberta)", rows)):
                t, s = ranking.evaluate(study, signals, transfer_rows=tr)
                print(f"\n## {name}, {label}\n")
                print(ranking.markdown(t, s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared/data"), help="folder with glue/ and transfer/")
    ap.add_argument("--cache-dir", help="task embedding cache (default $MTLSTUDY_CACHE/task_embeddings)")
    a = ap.parse_args()
    cache = Path(a.cache_dir) if a.cache_dir else None
    on_table(Path(a.data), cache)
    on_studies(Path(a.data), cache)


if __name__ == "__main__":
    main()
