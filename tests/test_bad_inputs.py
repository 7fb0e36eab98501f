"""Bad input catalogue (issue 6): every mistake a user can make in a profile, a --set, a data
folder, a model name or a run spec gives a non-zero exit, exactly one line on stderr (no
traceback) naming the file, line or key, and writes nothing.

The CLI cases run as subprocesses (`python -m mtlstudy.cli ...`), a few at a time, once per
module; each case is then its own test. Damage found while a run trains (a bad TSV row, a
corrupt result.json) is recorded with the run, tested at the end.
"""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from mtlstudy import runner, study
from mtlstudy.folder import CorruptResultError, StudyFolder
from tests.reliability_helpers import cli, cli_env


@dataclass
class Case:
    id: str
    args: list                     # CLI arguments; "{base}" is the valid profile, "{dir}" the case folder
    expect: list[str]              # substrings of the one-line error
    files: dict = field(default_factory=dict)   # extra files to write in the case folder: name -> text/bytes
    profile: dict | None = None    # changes to the base profile (dotted keys), written as {dir}/p.yaml
    env: dict = field(default_factory=dict)
    nothing_in: str | None = "out"  # a path (relative to the case folder) that must not exist afterwards


TSV_TASK = {"name": "mytask", "labels": ["0", "1"], "metric": "accuracy", "train_size": 10, "glue_folder": "My",
            "tsv": {"train": {"file": "train.tsv", "text_columns": ["s"], "label_column": "label"},
                    "dev": {"file": "dev.tsv", "text_columns": ["s"], "label_column": "label"}}}
REG_TASK = {**TSV_TASK, "name": "myreg", "labels": None, "metric": "spearman", "glue_folder": "Reg"}
GOOD_TSV = "s\tlabel\n" + "".join(f"sentence number {i}\t{i % 2}\n" for i in range(12))
ABLATION = {"target": "gen_sent", "support": "gen_para", "target_fractions": [1.0], "ks": [1]}

CASES = [
    # the profile: keys, types, values
    Case("unknown task", ["run", "{base}", "--set", "tasks=[gen_sent, nope]"], ["key 'tasks'", "unknown task 'nope'"]),
    Case("unknown top-level key", ["run", "{base}", "--set", "trian.epochs=1"], ["key 'trian'", "unknown key"]),
    Case("misspelled nested key", ["run", "{base}", "--set", "train.epoch=3"], ["key 'train.epoch'", "unknown key"]),
    Case("misspelled key in the file", ["run", "{dir}/p.yaml"], ["p.yaml", "key 'sedes'"], profile={"sedes": [1]}),
    Case("wrong type: int", ["run", "{base}", "--set", "train.epochs=three"], ["key 'train.epochs'"]),
    Case("wrong type: float", ["run", "{base}", "--set", "train.lr=fast"], ["key 'train.lr'"]),
    Case("wrong type: list", ["run", "{base}", "--set", "seeds=5"], ["key 'seeds'"]),
    Case("seeds empty", ["run", "{base}", "--set", "seeds=[]"], ["key 'seeds'"]),
    Case("seeds repeated", ["run", "{base}", "--set", "seeds=[1, 2, 1]"], ["key 'seeds'", "repeated"]),
    Case("tasks repeated", ["run", "{base}", "--set", "tasks=[gen_sent, gen_sent]"], ["tasks repeated"]),
    Case("no tasks", ["run", "{base}", "--set", "tasks=[]"], ["key 'tasks'"]),
    Case("unknown method", ["run", "{base}", "--set", "methods=[single, mtl_pairs]"], ["key 'methods.1'"]),
    Case("study name with a slash", ["run", "{base}", "--set", "name=a/b"], ["key 'name'"]),
    Case("workers zero (profile)", ["run", "{base}", "--set", "workers=0"], ["key 'workers'"]),
    Case("workers zero (flag)", ["run", "{base}", "--workers", "0"], ["--workers", "positive"]),
    Case("fraction above 1", ["run", "{dir}/p.yaml"], ["key 'ablation.target_fractions'", "(0, 1]"],
         profile={"methods": ["ablation"], "ablation": {**ABLATION, "target_fractions": [1.5]}}),
    Case("fraction zero", ["run", "{dir}/p.yaml"], ["key 'ablation.target_fractions'"],
         profile={"methods": ["ablation"], "ablation": {**ABLATION, "target_fractions": [0.0, 0.5]}}),
    Case("K list empty", ["run", "{dir}/p.yaml"], ["key 'ablation.ks'"],
         profile={"methods": ["ablation"], "ablation": {**ABLATION, "ks": []}}),
    Case("K not positive", ["run", "{dir}/p.yaml"], ["key 'ablation.ks'", "positive"],
         profile={"methods": ["ablation"], "ablation": {**ABLATION, "ks": [-1, 1]}}),
    Case("ablation method without its section", ["run", "{base}", "--set", "methods=[ablation]"], ["ablation"]),
    Case("support too small for a K", ["run", "{dir}/p.yaml"], ["support gen_para", "K=3"],
         profile={"methods": ["ablation"], "ablation": {**ABLATION, "ks": [1, 3]}}),
    Case("task empty after subsampling (fraction)", ["run", "{dir}/p.yaml"], ["gen_sent", "empty at fraction"],
         profile={"methods": ["ablation"], "ablation": {**ABLATION, "target_fractions": [0.001]}}),
    Case("task empty after subsampling (count)", ["run", "{base}", "--set", "train_counts={gen_sent: 0}"],
         ["key 'train_counts'", "positive"]),
    Case("train_counts names an unknown task", ["run", "{base}", "--set", "train_counts={gen_snet: 10}"],
         ["key 'train_counts'", "gen_snet"]),
    Case("unknown sampler", ["run", "{base}", "--set", "train.sampler=random"], ["key 'train.sampler'"]),
    Case("unknown schedule", ["run", "{base}", "--set", "train.schedule=mixed"], ["key 'train.schedule'"]),
    Case("batch smaller than the tasks trained together", ["run", "{base}", "--set", "train.batch_size=1"],
         ["train.batch_size"]),
    Case("batch larger than a task's training set", ["plan", "{base}", "--set", "train.batch_size=100000000"],
         ["key 'train.batch_size'", "100000000", "(40 examples"]),
    Case("unknown executor (profile)", ["run", "{base}", "--set", "executor=cloud"], ["key 'executor'"]),
    Case("unknown executor (flag)", ["run", "{base}", "--executor", "cloud"], ["--executor", "cloud"]),
    Case("slurm requested but absent", ["run", "{base}", "--executor", "slurm"], ["executor slurm", "sbatch"],
         env={"PATH": "/nonexistent-bin"}),
    # files: the profile itself, the user tasks, the --set syntax
    Case("profile not found", ["run", "{dir}/nope.yaml"], ["nope.yaml"]),
    Case("profile is not valid YAML", ["run", "{dir}/bad.yaml"], ["bad.yaml", "not valid YAML"],
         files={"bad.yaml": "name: x\ntasks: [gen_sent\n"}),
    Case("profile is not a mapping", ["run", "{dir}/list.yaml"], ["list.yaml", "mapping"],
         files={"list.yaml": "- name\n- tasks\n"}),
    Case("profile is not UTF-8", ["run", "{dir}/bin.yaml"], ["bin.yaml", "UTF-8"],
         files={"bin.yaml": b"name: \xff\xfe\x00bad\n"}),
    Case("profile with a code tag", ["run", "{dir}/evil.yaml"], ["evil.yaml", "not valid YAML"],
         files={"evil.yaml": 'name: x\ndescription: !!python/object/apply:os.system ["echo pwned"]\n'}),
    Case("--set without '='", ["run", "{base}", "--set", "train.epochs"], ["--set", "key=value"]),
    Case("--set with a broken value", ["run", "{base}", "--set", "seeds=[1,"], ["--set seeds", "not valid YAML"]),
    Case("--set into a value, not a section", ["run", "{base}", "--set", "train.epochs.max=3"],
         ["--set train.epochs.max", "'epochs' is not a section"]),
    Case("user task file missing", ["run", "{base}", "--set", "user_tasks=[{dir}/none.yaml]"], ["none.yaml"]),
    Case("user task file with a bad field", ["run", "{base}", "--set", "user_tasks=[{dir}/t.yaml]"],
         ["t.yaml", "field 'metric'"], files={"t.yaml": yaml.safe_dump({**TSV_TASK, "metric": "f1"})}),
    # data and model, checked before anything is written
    Case("glue_dir missing", ["run", "{base}", "--set", "tasks=[rte]", "--set", "data.source=glue_dir",
                              "--set", "data.glue_dir={dir}/no_glue"], ["key 'data.glue_dir'", "no_glue"]),
    Case("glue_dir not given", ["run", "{base}", "--set", "tasks=[rte]", "--set", "data.source=glue_dir"],
         ["key 'data.glue_dir'"]),
    Case("GLUE task folder missing", ["run", "{base}", "--set", "tasks=[rte, wnli]", "--set", "data.source=glue_dir",
                                      "--set", "data.glue_dir={dir}/glue"], ["glue/WNLI", "task wnli"],
         files={"glue/RTE/train.tsv": "index\tsentence1\tsentence2\tlabel\n",
                "glue/RTE/dev.tsv": "index\tsentence1\tsentence2\tlabel\n"}),
    Case("GLUE file missing", ["run", "{base}", "--set", "tasks=[rte]", "--set", "data.source=glue_dir",
                               "--set", "data.glue_dir={dir}/glue"], ["glue/RTE/dev.tsv", "not found"],
         files={"glue/RTE/train.tsv": "index\tsentence1\tsentence2\tlabel\n"}),
    Case("GLUE header lacks a column", ["run", "{base}", "--set", "tasks=[rte]", "--set", "data.source=glue_dir",
                                        "--set", "data.glue_dir={dir}/glue"], ["glue/RTE/train.tsv:1", "label"],
         files={"glue/RTE/train.tsv": "index\tsentence1\tsentence2\tgold\n",
                "glue/RTE/dev.tsv": "index\tsentence1\tsentence2\tlabel\n"}),
    Case("model folder missing", ["run", "{base}", "--set", "model={dir}/no_model"], ["key 'model'", "no_model"]),
    Case("model folder without config", ["run", "{base}", "--set", "model={dir}/empty_model"],
         ["key 'model'", "config.json"], files={"empty_model/README": "not a model"}),
    Case("hub model not available offline", ["run", "{base}", "--set", "model=no-such-org/no-such-model"],
         ["key 'model'", "no-such-org/no-such-model", "HF_HUB_OFFLINE"]),
    Case("output folder not writable", ["run", "{base}", "--set", "output_dir={dir}/afile/out"],
         ["afile", "not writable"], files={"afile": "a file, not a folder"}, nothing_in="afile/out"),
    # other commands
    Case("plan: unknown task", ["plan", "{base}", "--set", "tasks=[nope]"], ["unknown task 'nope'"]),
    Case("status: corrupt runs.json", ["status", "{dir}/p.yaml"], ["runs.json", "corrupt JSON"],
         profile={"output_dir": "{dir}/study"}, files={"study/bad/runs.json": "{\"a\": "}, nothing_in=None),
    Case("recommend: unknown target", ["recommend", "nope", "--candidates", "gen_sent"], ["unknown task 'nope'"]),
    Case("recommend: unknown candidate", ["recommend", "gen_nli", "--candidates", "gen_sent", "gen_snet"],
         ["unknown task 'gen_snet'"]),
    Case("recommend: candidate is the target", ["recommend", "gen_nli", "--candidates", "gen_nli"],
         ["candidate 'gen_nli' is the target"]),
    Case("recommend: candidate repeated", ["recommend", "gen_nli", "--candidates", "gen_sent", "gen_sent"],
         ["repeated", "gen_sent"]),
    Case("recommend: no candidates", ["recommend", "gen_nli"], ["no candidates"]),
    Case("recommend: --candidates empty", ["recommend", "gen_nli", "--candidates"], ["--candidates"]),
    Case("recommend: support and --candidates", ["recommend", "gen_nli", "gen_sent", "--candidates", "gen_para"],
         ["either a SUPPORT", "not both"]),
    Case("recommend: user task file missing", ["recommend", "mytask", "--candidates", "gen_sent",
                                               "--user-task", "{dir}/none.yaml"], ["none.yaml", "not found"]),
    Case("recommend: --glue-dir missing", ["recommend", "rte", "--candidates", "mrpc", "--glue-dir",
                                           "{dir}/no_glue"], ["--glue-dir", "no_glue"]),
    Case("train: spec file missing", ["train", "--spec", "{dir}/none.json"], ["none.json"]),
    Case("train: spec not valid JSON", ["train", "--spec", "{dir}/s.json"], ["s.json:2", "not valid JSON"],
         files={"s.json": '{"method": "single",\n "tasks": [gen_sent]}'}),
    Case("train: unknown spec key", ["train", "--spec", "{dir}/s.json", "--out", "{dir}/out"],
         ["s.json", "train.lrr"], files={"s.json": json.dumps({"tasks": ["gen_sent"], "train": {"lrr": 1}})}),
    Case("train: unknown task", ["train", "--tasks", "nope", "--out", "{dir}/out"], ["unknown task 'nope'"]),
    Case("train: --set into a value", ["train", "--tasks", "gen_sent", "--set", "seed.x=1"], ["'seed' is not a section"]),
    Case("train: fraction outside (0, 1]", ["train", "--tasks", "gen_sent", "--set", "train_fractions={gen_sent: 2}"],
         ["train_fractions.gen_sent", "(0, 1]"]),
    Case("train: stilts without a support checkpoint", ["train", "--method", "stilts", "--tasks", "gen_para",
                                                        "gen_sent"], ["--init-from"]),
    Case("train: bad --reference", ["train", "--tasks", "gen_sent", "--reference", "gen_sent=high"], ["--reference"]),
    Case("train: device not available", ["train", "--tasks", "gen_sent", "--set", "train.device=cuda:0",
                                         "--set", "model={dir}/m", "--out", "{dir}/out"], ["train.device"],
         files={"m/config.json": "{}"}, nothing_in=None),
    Case("train: device not a device", ["train", "--tasks", "gen_sent", "--set", "train.device=gpu0",
                                        "--set", "model={dir}/m", "--out", "{dir}/out"], ["train.device 'gpu0'"],
         files={"m/config.json": "{}"}, nothing_in=None),
]


def _set(d: dict, dotted: str, value):
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def _fill(x, d: Path):
    if isinstance(x, str):
        return x.replace("{dir}", str(d))
    if isinstance(x, list):
        return [_fill(v, d) for v in x]
    if isinstance(x, dict):
        return {k: _fill(v, d) for k, v in x.items()}
    return x


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # enough for the up-front check; nothing here trains
    base = {"name": "bad", "model": str(model), "tasks": ["gen_sent", "gen_para"], "seeds": [1],
            "methods": ["single", "mtl"], "data": {"generated_sizes": {"gen_sent": 40, "gen_para": 40}},
            "train": {"epochs": 1, "batch_size": 8, "sampler": "size"}, "notebooks": False}
    jobs = {}
    for i, case in enumerate(CASES):
        d = root / f"case{i:02d}"
        d.mkdir()
        prof = {**base, "output_dir": str(d / "out")}
        (d / "base.yaml").write_text(yaml.safe_dump(prof))
        for name, text in case.files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        if case.profile is not None:
            p = json.loads(json.dumps(prof))
            for k, v in _fill(case.profile, d).items():
                _set(p, k, v)
            (d / "p.yaml").write_text(yaml.safe_dump(p))
        args = [a.replace("{base}", str(d / "base.yaml")).replace("{dir}", str(d)) for a in case.args]
        jobs[case.id] = (d, args, cli_env(**case.env))
    with ThreadPoolExecutor(3) as pool:
        futures = {cid: pool.submit(cli, *args, cwd=d, env=env) for cid, (d, args, env) in jobs.items()}
        return {cid: (jobs[cid][0], f.result()) for cid, f in futures.items()}


def test_the_base_profile_of_the_catalogue_is_valid(catalogue, tmp_path):
    """Every case breaks one thing of a profile that is itself good (else a case could pass for the wrong reason)."""
    d = next(iter(catalogue.values()))[0]
    r = cli("plan", d / "base.yaml", "--quiet")
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(case, catalogue):
    d, r = catalogue[case.id]
    assert r.returncode != 0, r.stdout[-1000:]
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line = r.stderr.strip()
    assert line.startswith("mtlstudy"), line
    for text in case.expect:
        assert text.format(dir=d) in line, (text, line)
    if case.nothing_in:
        assert not (d / case.nothing_in).exists(), sorted(p.name for p in (d / case.nothing_in).rglob("*"))


# ---- damage found while running: recorded with the run ----------------------------------------

@pytest.fixture
def tsv_study(tmp_path, tiny_roberta):
    """A one-run study on a user TSV task; returns a function that writes train.tsv and runs it."""
    task = tmp_path / "mytask.yaml"
    task.write_text(yaml.safe_dump(TSV_TASK))
    reg = tmp_path / "myreg.yaml"
    reg.write_text(yaml.safe_dump(REG_TASK))
    for folder in ("My", "Reg"):
        (tmp_path / "glue" / folder).mkdir(parents=True)
        (tmp_path / "glue" / folder / "dev.tsv").write_text(GOOD_TSV)

    def run(train_tsv: str, name="mytask"):
        folder = "My" if name == "mytask" else "Reg"
        (tmp_path / "glue" / folder / "train.tsv").write_text(train_tsv)
        prof = tmp_path / f"{name}.profile.yaml"
        prof.write_text(yaml.safe_dump({
            "name": name, "model": str(tiny_roberta), "tasks": [name], "seeds": [1], "methods": ["single"],
            "user_tasks": [str(task), str(reg)], "data": {"source": "glue_dir", "glue_dir": str(tmp_path / "glue")},
            "train": {"epochs": 1, "batch_size": 4, "max_length": 16, "threads": 1}, "notebooks": False,
            "output_dir": str(tmp_path / "out")}))
        st = study.open_study(prof)
        st.write()
        rid = st.runs[0].run_id
        return runner.run_one(StudyFolder(st.dir), rid, notebooks=False), StudyFolder(st.dir).read_record(rid)
    return run


@pytest.mark.parametrize("row, expect", [
    ("a sentence\twith\t1\n", "train.tsv:4: 3 columns, expected 2"),
    ("a sentence\t7\n", "train.tsv:4: label '7' not in the label set"),
    ("a sentence\n", "train.tsv:4: 1 columns, expected 2"),
], ids=["too many columns", "label outside the label set", "too few columns"])
def test_bad_tsv_row_fails_the_run_naming_file_and_line(tsv_study, row, expect):
    lines = GOOD_TSV.splitlines(keepends=True)
    status, record = tsv_study("".join(lines[:3]) + row + "".join(lines[3:]))
    assert status == "failed"
    assert expect in record["error"] and record["error"].count("\n") == 0, record["error"]


def test_non_finite_regression_label_fails_the_run_naming_file_and_line(tsv_study):
    text = "s\tlabel\n" + "".join(f"sentence {i}\t{i / 4}\n" for i in range(6)) + "bad\tnan\n"
    status, record = tsv_study(text, name="myreg")
    assert status == "failed"
    assert "train.tsv:8: label 'nan' is not a finite number" in record["error"], record["error"]


def test_bad_tsv_row_through_train_command_is_one_line(tmp_path, tiny_roberta):
    (tmp_path / "glue" / "My").mkdir(parents=True)
    (tmp_path / "glue" / "My" / "train.tsv").write_text(GOOD_TSV + "one\ttwo\tthree\n")
    (tmp_path / "glue" / "My" / "dev.tsv").write_text(GOOD_TSV)
    spec = {"method": "single", "tasks": ["mytask"], "seed": 1, "model": str(tiny_roberta),
            "user_tasks": {"mytask": TSV_TASK}, "data": {"source": "glue_dir", "glue_dir": str(tmp_path / "glue")}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    r = cli("train", "--spec", tmp_path / "spec.json", "--out", tmp_path / "out")
    assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert f"{tmp_path}/glue/My/train.tsv:14: 3 columns, expected 2" in r.stderr
    assert not (tmp_path / "out" / "result.json").exists()


def test_corrupt_result_json_is_redone(tmp_path, tiny_roberta):
    """A result.json cut short (a disk filling up, a copy gone wrong) counts as not done: the run
    trains again and gets a whole record; status and collect do not fail on it meanwhile."""
    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump({
        "name": "cr", "model": str(tiny_roberta), "tasks": ["gen_sent"], "seeds": [1], "methods": ["single"],
        "data": {"generated_sizes": {"gen_sent": 32}, "generated_dev_size": 16},
        "train": {"epochs": 1, "batch_size": 8, "max_length": 16, "threads": 1}, "notebooks": False,
        "output_dir": str(tmp_path / "out")}))
    st = study.open_study(prof)
    st.write()
    rid = st.runs[0].run_id
    assert runner.run_one(StudyFolder(st.dir), rid, notebooks=False) == "done"
    good = StudyFolder(st.dir).read_record(rid)
    path = StudyFolder(st.dir).run(rid).record
    path.write_text(path.read_text()[:100])
    with pytest.raises(CorruptResultError, match="result.json"):
        StudyFolder(st.dir).read_record(rid)
    assert StudyFolder(st.dir).counts()["pending"] == 1
    StudyFolder(st.dir).collect()
    r = cli("status", prof)
    assert r.returncode == 0 and "pending 1" in r.stdout, r.stdout + r.stderr
    assert runner.run_one(StudyFolder(st.dir), rid, notebooks=False) == "done"
    again = StudyFolder(st.dir).read_record(rid)
    assert again["history"] == good["history"] and again["best"] == good["best"]


def test_a_bug_shows_its_traceback_and_is_not_called_bad_input(tmp_path):
    """A deliberate bug (a KeyError raised inside the training loop) is not bad input: the command
    exits 1 with the traceback, never 2 with a one-line 'error'."""
    code = ("import sys\n"
            "from mtlstudy import train\n"
            "def broken(*a, **k):\n"
            "    raise KeyError('deliberate bug')\n"
            "train.train_step = broken\n"
            "from mtlstudy.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    r = subprocess.run([sys.executable, "-c", code, "train", "--tasks", "gen_sent", "--out", str(tmp_path / "run"),
                        "--set", "train.epochs=1", "--set", "data.generated_sizes={gen_sent: 32}",
                        "--set", "train.batch_size=16", "--set", "train.max_length=16"],
                       capture_output=True, text=True, env=cli_env(), timeout=600)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" in r.stderr and "KeyError: 'deliberate bug'" in r.stderr
    assert "mtlstudy: error" not in r.stderr
