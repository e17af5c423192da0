"""The optional `bert_zh` graph (docs/models.md): chinese-roberta-wwm-ext-large as upstream's
TextPreprocessor.get_bert_feature runs it, `AutoModelForMaskedLM(...)(**inputs, output_hidden_states=True)
["hidden_states"][-3]`, for a padded batch: inputs `input_ids`, `attention_mask`, `token_type_ids` i64
[B,L], output `hidden_m3` f32 [B,L,H]. CLS/SEP stripping and the word2ph repetition stay in TypeScript
(services/text-frontend/bert.ts).

hidden_states[-3] is the output of layer N−2 of N, so the graph holds only the first N−2 layers (the
last two would be computed and thrown away); parity.py checks it against the whole model's
hidden_states[-3]. Loaded with `AutoModelForMaskedLM.from_pretrained(dir)` as upstream does (the real
transformers where installed, else tools/export/shims/transformers). The tokenizer's vocabulary is
written next to the graph as `bert_zh_vocab.txt` (BertTokenizer's vocab.txt: one token per line, id =
line number), from the folder's vocab.txt or, failing that, its tokenizer.json.
"""
from __future__ import annotations

import json
import os
from typing import List

import torch
from torch import nn

GRAPH_FILE = "bert_zh.onnx"
VOCAB_FILE = "bert_zh_vocab.txt"


class BertZh(nn.Module):
    """hidden_states[-3] of a BertForMaskedLM, computed by its first N−2 layers only (the model given is
    cut to those layers in place)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.bert = model.bert
        layers = self.bert.encoder.layer
        if len(layers) < 3:
            raise ValueError(f"a BERT of {len(layers)} layers has no hidden_states[-3] past its embeddings")
        self.bert.encoder.layer = nn.ModuleList(list(layers)[: len(layers) - 2])

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        output_hidden_states=True)
        return out["hidden_states"][-1]


def read_vocab(folder: str) -> List[str]:
    """The tokens in id order: vocab.txt, else tokenizer.json's model.vocab (a fast-tokenizer folder)."""
    txt = os.path.join(folder, "vocab.txt")
    if os.path.isfile(txt):
        with open(txt, encoding="utf-8") as f:
            tokens = f.read().splitlines()
    else:
        path = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder}: neither vocab.txt nor tokenizer.json")
        with open(path, encoding="utf-8") as f:
            vocab = json.load(f)["model"]["vocab"]
        tokens = [""] * (max(vocab.values()) + 1)
        for tok, i in vocab.items():
            tokens[i] = tok
    for special in ("[CLS]", "[SEP]", "[UNK]"):
        if special not in tokens:
            raise ValueError(f"{folder}: the BERT vocabulary has no {special}")
    return tokens


def load_bert(folder: str) -> nn.Module:
    from transformers import AutoModelForMaskedLM

    return AutoModelForMaskedLM.from_pretrained(folder).float().eval()


def hidden_size(model: nn.Module) -> int:
    return int(model.bert.embeddings.word_embeddings.weight.shape[1])


def export_bert(model: nn.Module, vocab: List[str], out_dir: str, *, opset: int = 17, fp16: bool = False) -> None:
    from onnx_util import export_onnx

    n_vocab = int(model.bert.embeddings.word_embeddings.weight.shape[0])
    if len(vocab) > n_vocab:
        raise ValueError(f"the vocabulary has {len(vocab)} tokens, the model's embedding {n_vocab}")
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]]) % n_vocab
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    export_onnx(BertZh(model).eval(), (ids, mask, torch.zeros_like(ids)), os.path.join(out_dir, GRAPH_FILE),
                inputs=["input_ids", "attention_mask", "token_type_ids"], outputs=["hidden_m3"],
                dynamic={"input_ids": {0: "B", 1: "L"}, "attention_mask": {0: "B", 1: "L"},
                         "token_type_ids": {0: "B", 1: "L"}, "hidden_m3": {0: "B", 1: "L"}},
                opset=opset, fp16=fp16)
    tmp = os.path.join(out_dir, "." + VOCAB_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    os.replace(tmp, os.path.join(out_dir, VOCAB_FILE))
