"""SentencePiece encoders (issue 38, item 5): a DeBERTa-v2/v3-shaped encoder with a SentencePiece
tokenizer, the family of microsoft/deberta-v3-base and XLM-R, loads through the installed
`sentencepiece` and `protobuf` and trains a study offline. The encoder has random weights and the
tokenizer is trained here, so nothing is downloaded."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from mtlstudy import generated, model, study

from tests.profiles import tiny_profile

SPECIAL = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]


@pytest.fixture(scope="module")
def tiny_deberta(tmp_path_factory):
    """A random DeBERTa-v2 (hidden 32, 2 layers) and a unigram SentencePiece model trained on the
    generated tasks' sentences, saved as DeBERTa-v3 saves them (spm.model, no tokenizer.json)."""
    import sentencepiece as spm
    import torch
    from transformers import DebertaV2Config, DebertaV2Model, DebertaV2Tokenizer

    folder = tmp_path_factory.mktemp("tiny_deberta")
    texts = []
    for task in ("gen_para", "gen_sent"):
        a, b, _ = generated.generate(task, "train", 200, seed=0)
        texts += a + (b or [])
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "spm"), vocab_size=300, hard_vocab_limit=False, model_type="unigram",
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]",
        unk_piece="[UNK]", user_defined_symbols=["[MASK]"], minloglevel=2)
    corpus.unlink()
    (folder / "spm.vocab").unlink()
    # microsoft/deberta-v3-base's tokenizer files: the SentencePiece model and this config, no
    # tokenizer.json, so loading converts spm.model (sentencepiece and protobuf)
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "vocab_type": "spm"}))
    tok = DebertaV2Tokenizer.from_pretrained(folder)
    config = DebertaV2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=128, type_vocab_size=0,
                             relative_attention=True, position_buckets=16, norm_rel_ebd="layer_norm",
                             share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
                             pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    DebertaV2Model(config).save_pretrained(folder)
    return folder


def test_the_sentencepiece_tokenizer_loads_from_its_model_file_and_splits_as_sentencepiece_does(tiny_deberta):
    import sentencepiece as spm
    from transformers import DebertaV2Tokenizer, DebertaV2TokenizerFast

    loaded = model.load_tokenizer(str(tiny_deberta))  # what a study loads (AutoTokenizer)
    assert isinstance(loaded, (DebertaV2Tokenizer, DebertaV2TokenizerFast))
    first, second = generated.generate("gen_para", "dev", 1, seed=1)[:2]
    text, pair = first[0], second[0]
    ids = loaded(text, pair)["input_ids"]
    pieces = spm.SentencePieceProcessor(model_file=str(tiny_deberta / "spm.model"))
    expected = [loaded.cls_token_id, *pieces.encode(text), loaded.sep_token_id, *pieces.encode(pair),
                loaded.sep_token_id]
    assert ids == expected
    assert loaded.unk_token_id not in ids  # the trained vocabulary covers the generated sentences


def test_a_study_with_a_sentencepiece_encoder_learns(tmp_path, tiny_deberta):
    prof = tiny_profile(tmp_path, tiny_deberta, name="spm", tasks=["gen_sent"], methods=["single"],
                        **{"data.generated_sizes": {"gen_sent": 160}, "data.generated_dev_size": 64,
                           "train.epochs": 6, "train.lr": 3e-3, "train.batch_size": 16, "workers": 1})
    st = study.open_study(prof)
    assert study.run(st, progress=False).counts == {"done": 1, "failed": 0, "blocked": 0, "pending": 0}
    row = pd.read_csv(st.dir / "results.csv").iloc[0]
    assert row["score"] > row["majority_score"] + 10, (row["score"], row["majority_score"])
