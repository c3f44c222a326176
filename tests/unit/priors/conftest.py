"""Small local stand-ins for GroundingDINO's files: a tiny BERT folder and a shrunken config."""

import re
from pathlib import Path

import pytest

TINY_GROUNDINGDINO = {"enc_layers": 1, "dec_layers": 1, "num_queries": 12}
VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", "bottle", "screw", "metal", "nut", "a", "the"]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A local BERT folder (config.json, vocab.txt, weights) built from a small random BertConfig."""
    pytest.importorskip("transformers", reason="the sam extra (transformers) is not installed")
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("bert-tiny")
    (folder / "vocab.txt").write_text("\n".join(VOCABULARY) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCABULARY),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=300,
    )
    BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_groundingdino_config(tmp_path_factory) -> Path:
    """GroundingDINO's SwinT OGC config with one encoder and decoder layer and 12 queries."""
    groundingdino = pytest.importorskip("groundingdino", reason="groundingdino-py (sam extra) is not installed")
    text = (Path(groundingdino.__file__).parent / "config" / "GroundingDINO_SwinT_OGC.py").read_text()
    for key, value in TINY_GROUNDINGDINO.items():
        text, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.MULTILINE)
        assert count == 1, key
    path = tmp_path_factory.mktemp("groundingdino") / "GroundingDINO_SwinT_tiny.py"
    path.write_text(text)
    return path
