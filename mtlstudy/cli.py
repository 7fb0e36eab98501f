"""The `mtlstudy` command."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from .errors import UserError, validation_message
from .spec import OFFLINE_MINILM


def _add_profile(p):
    p.add_argument("profile", nargs="?", default="demo", help="profile name in params/ or a YAML path (default: demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile key, e.g. --set train.epochs=3 --set seeds=[1,2]")


def cmd_train(a):
    from .folder import RunFolder
    from .profile import apply_overrides, model_problem
    from .spec import RunSpec
    from .tasks import get_task

    raw = {}
    if a.spec:
        try:
            raw = json.loads(Path(a.spec).read_text())
        except FileNotFoundError:
            raise UserError(f"{a.spec}: run spec file not found") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{a.spec}:{e.lineno}: not valid JSON ({e.msg})") from None
        except UnicodeDecodeError:
            raise UserError(f"{a.spec}: not UTF-8 text") from None
        if not isinstance(raw, dict):
            raise UserError(f"{a.spec}: a run spec must be a JSON object")
    raw.setdefault("method", a.method)
    if a.tasks:
        raw["tasks"] = a.tasks
    raw.setdefault("seed", a.seed)
    raw.setdefault("model", a.model)
    apply_overrides(raw, a.overrides)
    try:
        spec = RunSpec.model_validate(raw)
    except ValidationError as e:
        raise UserError(validation_message(e, f"{a.spec}: " if a.spec else "", what="run parameter")) from None
    if spec.method == "stilts" and not a.init_from:
        raise UserError("--method stilts: --init-from SUPPORT_CHECKPOINT_FOLDER is required (the support's best/<task>)")
    reference = {}
    for item in a.reference:
        task, _, score = item.partition("=")
        try:
            reference[task] = float(score)
        except ValueError:
            raise UserError(f"--reference {item!r}: expected TASK=SCORE (a dev score, x100)") from None
    for name in spec.tasks:
        get_task(name, spec.user_tasks)  # an unknown task fails before torch is even imported
    problem = model_problem(spec.model)
    if problem:
        raise UserError(f"run parameter 'model': {problem}")
    from .train import train

    run = RunFolder(Path(a.out or Path("outputs") / "runs" / spec.run_id()))
    record = train(spec, run, init_checkpoint=Path(a.init_from) if a.init_from else None,
                   reference_scores=reference or None)
    run.write_record(record)  # finished: the record is all that is needed
    best = {t: round(b["score"], 2) for t, b in record["best"].items()}
    print(f"{spec.run_id()}: best {best}; record in {run.record}")


def cmd_plan(a):
    from . import study

    st = study.open_study(a.profile, a.overrides)
    rows, summary = study.plan(st)
    if not a.quiet:
        by_id = summary["by_id"]
        print(f"{'run id':58} {'method':8} {'seed':>7} {'deps':>4}  status")
        for r in rows:
            deps = ",".join(d[:18] for d in by_id[r["run_id"]].deps[:2]) + ("..." if r["deps"] > 2 else "")
            print(f"{r['run_id']:58} {r['method']:8} {r['seed']:>7} {r['deps']:>4}  {r['status']:8} {deps}")
    print(f"runs: {summary['runs']} ({', '.join(f'{k} {v}' for k, v in summary['runs_by_method'].items())}); "
          f"done: {sum(r['status'] == 'done' for r in rows)}")
    if summary["reused"]:
        print(f"reused: {summary['reused']} runs finished in another study under {st.dir.parent} are taken from "
              f"there, not trained again")
    bound = "" if summary["exact"] else "at most "
    print(f"training example-passes: {bound}{summary['example_passes']:,}")
    print(f"naive protocol (every ordered MTL pair, support models per STILTs pair): {summary['naive_runs']} runs, "
          f"{bound}{summary['naive_example_passes']:,} example-passes; this plan needs {summary['ratio']:.2f} of it")
    if not summary["exact"]:
        print("(an upper bound: a dynamic sampler's epochs after the first depend on dev scores; each counts at "
              "the most an epoch can hold)")
    from .compute import token_line
    print(token_line(st.runs, st.profile, st.user))
    print(study.disk_line(st, rows))


def cmd_run(a):
    from . import study

    st = study.open_study(a.profile, a.overrides)
    outcome = study.run(st, executor=a.executor, workers=a.workers, notebooks=False if a.no_notebooks else None,
                        retry_failed=a.retry_failed, runs_per_gpu=a.runs_per_gpu)
    print(f"study {st.profile.name}: " + ", ".join(f"{k} {v}" for k, v in outcome.counts.items()))
    for rid, err in outcome.failures:
        print(f"  failed {rid}: {err}")
    for rid, target, reason in outcome.collapsed:
        print(f"  collapsed {rid} ({target}): {reason}")
    print(f"results: {st.folder.results_table}")
    if outcome.exit_code == 0 and (line := study.significance(st)):  # every run done: the study's finding
        print(line)
    if a.report:
        print(f"report: {study.report(st)}")
    if outcome.unfinished:
        print(f"  {outcome.counts['pending']} runs not finished: {outcome.unfinished}")
    return outcome.exit_code


def cmd_run_one(a):
    from .folder import StudyFolder
    from .runner import exit_code, run_one

    status = run_one(StudyFolder(a.study_dir), a.run_id, notebooks=not a.no_notebook)
    print(f"{a.run_id}: {status}")
    return exit_code(status)


def cmd_status(a):
    from . import study

    st = study.open_study(a.profile, a.overrides)
    now = study.status(st)
    if not now.started:
        print(f"study {st.profile.name}: not started ({len(st.runs)} runs planned)")
        return 0
    print(f"study {st.profile.name} ({st.dir}): " + ", ".join(f"{k} {v}" for k, v in now.counts.items()))
    for rid, who in now.in_flight:
        print(f"  training {rid}: {who}")
    for rid, err in now.failures:
        print(f"  failed {rid}: {err}")
    for rid, target, reason in now.collapsed:
        print(f"  collapsed {rid} ({target}): {reason}")
    print(f"disk use: {now.disk_bytes / 1e6:.1f} MB")


def cmd_collect(a):
    from . import study

    print(study.collect(study.open_study(a.profile, a.overrides)))


def cmd_report(a):
    from . import study

    st = study.open_study(a.profile, a.overrides)
    print(f"report: {study.report(st, study.open_study(a.compare_to) if a.compare_to else None)}")


def cmd_recommend(a):
    if a.candidates is not None:
        return _recommend_candidates(a)
    if a.support is None:
        raise UserError("no candidates: give a SUPPORT or --candidates S1 S2 ...")
    from .recommend import format_recommendation, recommend

    def arg(v):
        return int(v) if v.lstrip("-").isdigit() else v

    print(format_recommendation(recommend(arg(a.target), arg(a.support), [Path(s) for s in a.study])))


def _recommend_candidates(a):
    from .data import DataSource
    import pandas as pd

    from . import ranking, transfer
    from .data import load_task_file
    from .recommend import format_candidates, recommend_candidates

    if a.support is not None:
        raise UserError(f"give either a SUPPORT ({a.support}) or --candidates, not both")
    user = {t.name: t for t in map(load_task_file, a.user_task)}
    source = DataSource(source="glue_dir", glue_dir=Path(a.glue_dir)) if a.glue_dir else DataSource()
    if a.glue_dir and not Path(a.glue_dir).is_dir():
        raise UserError(f"--glue-dir {a.glue_dir}: folder not found")
    rows = None
    if a.transfer_table:
        rows = transfer.setting_rows(transfer.read_table(a.transfer_table), a.transfer_setting)
    table = recommend_candidates(a.target, a.candidates, user, source, [Path(s) for s in a.study],
                                 sample=a.sample, cache_dir=Path(a.cache_dir) if a.cache_dir else None,
                                 transfer_rows=rows)
    known = 0 if rows is None else int(pd.Series(a.candidates).isin(set(rows["source"])).sum())
    evidence = ranking.evidence(rows, Path(a.transfer_table or "").name, a.transfer_setting, known, len(a.candidates))
    print(format_candidates(a.target, table, evidence, Path(a.transfer_table or "").name))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line on stderr, like every other error of the command."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message.splitlines()[0]} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="mtlstudy", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one run and write its result.json")
    p.add_argument("--spec", help="a run's parameters as JSON")
    p.add_argument("--method", default="single", choices=["single", "mtl", "mtl_all", "stilts"])
    p.add_argument("--tasks", nargs="+", help="stilts: SUPPORT TARGET; mtl: A B")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model", default=OFFLINE_MINILM)
    p.add_argument("--init-from", help="stilts: folder of the support checkpoint")
    p.add_argument("--out", help="run folder (default outputs/runs/<run id>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. --set train.epochs=1 --set data.source=glue_dir --set data.glue_dir=glue_data")
    p.add_argument("--reference", action="append", default=[], metavar="TASK=SCORE",
                   help="dynamic samplers (gap, softmax_gap): a task's single-task dev score, x100")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("plan", help="list the runs of a study and its compute")
    _add_profile(p)
    p.add_argument("-q", "--quiet", action="store_true", help="totals only")
    p.set_defaults(fn=cmd_plan)

    p = sub.add_parser("run", help="run what is not done, in dependency order")
    _add_profile(p)
    p.add_argument("--executor", choices=["local", "slurm"])
    p.add_argument("--workers", type=_positive_int, help="runs at once (default: the profile's; on GPUs every slot)")
    p.add_argument("--runs-per-gpu", type=_positive_int, help="local executor: runs sharing one GPU (default 1)")
    p.add_argument("--retry-failed", action="store_true")
    p.add_argument("--no-notebooks", action="store_true", help="train directly, without the run notebook")
    p.add_argument("--report", action="store_true", help="build the HTML report at the end")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("run-one", help="execute one planned run (used by the executors)")
    p.add_argument("study_dir")
    p.add_argument("run_id")
    p.add_argument("--no-notebook", action="store_true")
    p.set_defaults(fn=cmd_run_one)

    for name, fn, text in [("status", cmd_status, "counts, failures and disk use"),
                           ("collect", cmd_collect, "write results.csv")]:
        p = sub.add_parser(name, help=text)
        _add_profile(p)
        p.set_defaults(fn=fn)

    p = sub.add_parser("report", help="analysis notebooks and HTML report")
    _add_profile(p)
    p.add_argument("--compare-to", help="a second study (e.g. bert) for the replication figure")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("recommend", help="MTL or STILTs for a target and a support; or rank candidate supports")
    p.add_argument("target", help="task name (or train size, with SUPPORT)")
    p.add_argument("support", nargs="?", help="task name or train size (or use --candidates)")
    p.add_argument("--candidates", nargs="+", metavar="TASK",
                   help="rank these support tasks for TARGET (by measured transfer with --transfer-table, "
                        "then text similarity and size ratio)")
    p.add_argument("--user-task", action="append", default=[], metavar="FILE",
                   help="with --candidates: a task YAML file (repeatable), its name usable as target/candidate")
    p.add_argument("--glue-dir", help="with --candidates: read GLUE tasks from this folder, not the hub")
    p.add_argument("--sample", type=_positive_int, default=256, help="training texts embedded per task (256)")
    p.add_argument("--cache-dir", help="task embedding cache (default $MTLSTUDY_CACHE/task_embeddings)")
    p.add_argument("--study", action="append", default=[],
                   help="finished study folder(s) to cite; with --candidates their task sizes are used")
    p.add_argument("--transfer-table", metavar="CSV",
                   help="with --candidates: transfer measured by others (target,source,setting,pc), "
                        "e.g. ../shared/data/transfer/taskweb_glue.csv, ranked by first")
    p.add_argument("--transfer-setting", default="finetune/roberta",
                   help="the table's setting to use (default finetune/roberta)")
    p.set_defaults(fn=cmd_recommend)

    return ap


def main(argv=None) -> int:
    """Exit 0 done, 1 a run failed (run) or a bug (with its traceback), 2 bad input (one line), 3 runs
    unfinished (run), 130 interrupted."""
    a = build_parser().parse_args(argv)
    try:
        return a.fn(a) or 0
    except KeyboardInterrupt:
        print("mtlstudy: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except UserError as e:  # bad input: one line naming the field or file; anything else is a bug
        text = str(e).strip()
        print(f"mtlstudy: error: {text.splitlines()[0] if text else type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
