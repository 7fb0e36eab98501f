"""The README's commands work as written (issue 30): every command in a shell block of README.md is
run here, in README order, in a scratch folder (shrunk where it trains), or listed with the reason it
is not (a GPU, a cluster, an interactive server, the test suite itself). A command that this file
does not know fails the test, so the front page cannot drift from the tool: add a rule to RULES.

Commands that need a GPU or a cluster are not run, but their arguments must parse and their profile
with its --set must load. `make demo` runs its Makefile recipe, shrunk.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TIMEOUT = 900

# What a training command is shrunk to: two generated tasks, two seeds, single-task and pairwise MTL
# (6 runs), one epoch of a few batches, the tiny test encoder ({tiny}). Applied to every `mtlstudy`
# command on that profile (plan, run, status, collect, report) so they all see the same study.
SHRINK = {
    "demo": ["tasks=[gen_para, gen_sent]", "seeds=[1, 2]", "methods=[single, mtl]",
             "data.generated_sizes={gen_para: 32, gen_sent: 32}", "data.generated_dev_size=16",
             "train.epochs=1", "model={tiny}"],
    "examples/own_task/study.yaml": ["seeds=[1, 2]", "train.epochs=1", "model={tiny}"],
}
RECOMMEND_SHRINK = ["--sample", "16"]  # texts embedded per candidate (256 by default)
PROFILE_COMMANDS = {"plan", "run", "status", "collect", "report"}


@dataclass(frozen=True)
class Rule:
    prefix: str                   # the command's first words, after .venv/bin/ is dropped
    run: bool = False             # run it (shrunk); else it is skipped with `why`
    why: str = ""


GPU = "needs a GPU"
RULES = [
    Rule("make demo", run=True, why="runs the Makefile's recipe, shrunk"),
    Rule("make test", why="this test is part of `make test`"),
    Rule("make test-fast", why="the unit tier of the suite this test belongs to"),
    Rule("make gpu-check", why=GPU),
    Rule("mtlstudy plan", run=True),
    Rule("mtlstudy run demo", run=True),
    Rule("mtlstudy status", run=True),
    Rule("mtlstudy run paper", why=GPU),
    Rule("mtlstudy run paper --runs-per-gpu", why=GPU),
    Rule("mtlstudy run paper --executor slurm", why="needs a Slurm cluster with GPUs"),
    Rule("mtlstudy report paper", why="needs the finished paper study (GPU)"),
    Rule("mtlstudy run bert", why=GPU),
    Rule("mtlstudy report bert", why="needs the finished bert and paper studies (GPU)"),
    Rule("mtlstudy run examples/own_task/study.yaml", run=True),
    Rule("mtlstudy recommend", run=True),
    Rule("mtlstudy recommend own_task", run=True),
    Rule("papermill -f params/paper.yaml", why=GPU),
    Rule("papermill notebooks/pairs.ipynb", run=True),
    Rule("jupyter lab", why="starts a server that runs until stopped (tests/test_notebooks.py runs the explorer)"),
]


def shell_commands(markdown: str) -> list[list[str]]:
    """The commands of every ```bash / sh / shell block, as word lists: comments dropped, lines
    joined at a trailing backslash, `a && b` split in two."""
    out = []
    for block in re.findall(r"^```(?:bash|sh|shell|console)\s*\n(.*?)^```", markdown, re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                out.append(words[:cut])
                words = words[cut + 1:]
    return [c for c in out if c]


def normalized(words: list[str]) -> tuple[dict, list[str]]:
    """(environment assignments, the command with .venv/bin/ and $(BIN)/ dropped)."""
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        key, value = words[0].split("=", 1)
        env[key], words = value, words[1:]
    first = re.sub(r"^(\.venv/bin/|\$\(BIN\)/)", "", words[0]) if words else ""
    return env, [first, *words[1:]]


def rule_for(words: list[str]) -> Rule:
    """The rule with the longest prefix that matches; AssertionError for a command no rule knows."""
    text = " ".join(words)
    fits = [r for r in RULES if text == r.prefix or text.startswith(r.prefix + " ")]
    assert fits, (f"README command {text!r} is not known to tests/test_readme.py: add a rule to RULES "
                  "(run it, shrunk if it trains, or say why it cannot run here)")
    return max(fits, key=lambda r: len(r.prefix))


def makefile_recipe(target: str) -> list[list[str]]:
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(shlex.split(line.strip()))
    return recipe


def readme_commands() -> list[list[str]]:
    return shell_commands(README.read_text())


def _id(words):
    return " ".join(words)[:70]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, tiny_roberta) -> dict:
    """A scratch folder that looks like the repository (params/, notebooks/, examples/ ... linked),
    where the commands run, so outputs/ lands there; and the environment they run in."""
    root = tmp_path_factory.mktemp("readme")
    for name in ("params", "notebooks", "examples", "docs", "scripts", "benchmarks", "Makefile"):
        if (REPO / name).exists():
            (root / name).symlink_to(REPO / name)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return {"root": root, "env": env, "tiny": str(tiny_roberta)}


def shrunk(words: list[str], box: dict) -> list[str]:
    """The command as this test runs it: the interpreter it runs under, and the shrinking."""
    prog, args = words[0], words[1:]
    if prog == "mtlstudy":
        extra = []
        if args and args[0] in PROFILE_COMMANDS:
            profile = args[1] if len(args) > 1 and not args[1].startswith("-") else "demo"
            extra = [w for o in SHRINK.get(profile, []) for w in ("--set", o.replace("{tiny}", box["tiny"]))]
        elif args and args[0] == "recommend" and "--candidates" in args:
            extra = RECOMMEND_SHRINK + ["--cache-dir", str(box["root"] / "embeddings")]
        return [sys.executable, "-m", "mtlstudy.cli", *args, *extra]
    if prog == "papermill":
        args = list(args)
        profile = args[args.index("base_profile") + 1] if "base_profile" in args else None
        overrides = []
        if "overrides" in args:  # -p overrides VALUE: the README's first, the shrinking after
            i = args.index("overrides")
            overrides = yaml.safe_load(args[i + 1])
            del args[i - 1:i + 2]
        overrides += [o.replace("{tiny}", box["tiny"]) for o in SHRINK.get(profile, [])]
        overrides.append(f"output_dir={box['root'] / 'outputs'}")  # a notebook's relative paths are the repository's
        return [sys.executable, "-m", "papermill", *args, "-p", "overrides", json.dumps(overrides),
                "-p", "report", "False"]
    raise AssertionError(f"no way to run {prog!r} here: give its rule run=False with a reason")


def run(words: list[str], box: dict, env_extra=None) -> subprocess.CompletedProcess:
    argv = shrunk(words, box)
    return subprocess.run(argv, cwd=box["root"], env={**box["env"], **(env_extra or {})},
                          capture_output=True, text=True, timeout=TIMEOUT)


def check_without_running(words: list[str]):
    """A command not run here still has to be right: its arguments parse, its profile and --set load."""
    if words[0] != "mtlstudy":
        return
    from mtlstudy import study
    from mtlstudy.cli import build_parser

    try:
        a = build_parser().parse_args(words[1:])
    except SystemExit:
        raise AssertionError(f"README command {' '.join(words)!r}: mtlstudy does not take these arguments")
    if getattr(a, "profile", None):
        study.open_study(a.profile, a.overrides)


@pytest.mark.parametrize("words", readme_commands(), ids=_id)
def test_readme_command_works(words, sandbox):
    env, words = normalized(words)
    rule = rule_for(words)
    if not rule.run:
        check_without_running(words)
        pytest.skip(f"not run: {rule.why}")
    steps = makefile_recipe(words[1]) if words[0] == "make" else [words]
    for step in steps:
        step_env, step = normalized(step)
        step_rule = rule_for(step)
        assert step_rule.run, f"{' '.join(words)} runs {' '.join(step)!r}, which this test does not run"
        done = run(step, sandbox, {**env, **step_env})
        assert done.returncode == 0, (f"README command {' '.join(step)!r} exited {done.returncode}:\n"
                                      f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def test_every_shell_block_of_the_readme_holds_commands():
    """The collector sees the README's blocks (a README without any would test nothing)."""
    words = [" ".join(normalized(c)[1]) for c in readme_commands()]
    assert "make demo" in words and "make test" in words


def test_a_command_no_rule_knows_fails():
    with pytest.raises(AssertionError, match="not known to tests/test_readme.py"):
        rule_for(normalized(["mtlstudy", "frobnicate", "demo"])[1])
    assert shell_commands("```bash\n.venv/bin/mtlstudy plan paper -q  # a comment\nmake demo && make test\n```\n") == [
        [".venv/bin/mtlstudy", "plan", "paper", "-q"], ["make", "demo"], ["make", "test"]]


def test_a_broken_command_fails_even_when_it_is_not_run(sandbox):
    """A misspelt key fails the run (exit 2, before any training); a misspelt option of a GPU command
    fails the argument check."""
    assert run(["mtlstudy", "plan", "demo", "--set", "train.epoch=1"], sandbox).returncode == 2
    with pytest.raises(AssertionError, match="does not take these arguments"):
        check_without_running(["mtlstudy", "run", "paper", "--workerz", "8"])


def test_the_readme_is_short_and_names_no_commit_date_or_clock_time():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert not re.findall(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b", text), "commit hash"
    assert not re.findall(r"\b\d{4}-\d{2}-\d{2}\b", text), "date"
    assert not re.findall(r"\b\d{1,2}:\d{2}\b", text), "clock time"
