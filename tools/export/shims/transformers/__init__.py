"""Shim: transformers' HubertModel (chinese-hubert-base) and, for chinese-roberta-wwm-ext-large,
AutoModelForMaskedLM and AutoTokenizer, as GPT-SoVITS uses them (see ../README.md). The BERT part is
at the end of this file.

Written from the HuBERT-base architecture and the key names of its Hugging Face checkpoints
(config.json + pytorch_model.bin), for the configuration chinese-hubert-base uses:
feat_extract_norm "group", do_stable_layer_norm false, feat_proj_layer_norm true, conv_bias false,
gelu activations. Inference only. In an environment with the real transformers package that package is
used instead (the shims sit after site-packages on sys.path).

Forward (input_values [B, S] raw 16 kHz audio) -> {"last_hidden_state": [B, T, hidden]}:
- feature encoder: 7 Conv1d (no bias); GroupNorm(one group per channel) after the first; GELU after each;
- feature projection: LayerNorm(512), Linear(512 -> hidden);
- positional convolution: Conv1d(hidden, hidden, k 128, padding 64, groups 16) with weight norm over
  dim 2, the last frame dropped (even kernel), GELU; added to the hidden states; LayerNorm;
- post-norm transformer layers: x = LN(x + Attn(x)); x = LN_final(x + W2·GELU(W1·x)), attention
  q·k scaled by head_dim^-0.5.
"""
import json
import math
import os

import torch
from torch import nn
from torch.nn import functional as F


class _Logging:
    def set_verbosity_error(self):
        pass


logging = _Logging()


class HubertConfig(dict):
    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError as e:
            raise AttributeError(k) from e


_DEFAULTS = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
                 conv_bias=False, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
                 feat_extract_norm="group", do_stable_layer_norm=False, feat_proj_layer_norm=True,
                 layer_norm_eps=1e-5, hidden_act="gelu", feat_extract_activation="gelu")


class _ConvLayer(nn.Module):
    def __init__(self, cin, cout, k, s, bias, group_norm):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, stride=s, bias=bias)
        if group_norm:
            self.layer_norm = nn.GroupNorm(cout, cout, affine=True)

    def forward(self, x):
        x = self.conv(x)
        if hasattr(self, "layer_norm"):
            x = self.layer_norm(x)
        return F.gelu(x)


class _FeatureEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        layers = []
        cin = 1
        for i, (d, k, s) in enumerate(zip(c.conv_dim, c.conv_kernel, c.conv_stride)):
            layers.append(_ConvLayer(cin, d, k, s, c.conv_bias, group_norm=(i == 0)))
            cin = d
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, x):
        x = x[:, None]
        for l in self.conv_layers:
            x = l(x)
        return x


class _FeatureProjection(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer_norm = nn.LayerNorm(c.conv_dim[-1], eps=c.layer_norm_eps)
        self.projection = nn.Linear(c.conv_dim[-1], c.hidden_size)

    def forward(self, x):
        return self.projection(self.layer_norm(x))


class _PosConv(nn.Module):
    def __init__(self, c):
        super().__init__()
        k = c.num_conv_pos_embeddings
        self.conv = nn.utils.weight_norm(
            nn.Conv1d(c.hidden_size, c.hidden_size, k, padding=k // 2, groups=c.num_conv_pos_embedding_groups), dim=2)
        self.remove = 1 if k % 2 == 0 else 0

    def forward(self, x):  # [B, hidden, T]
        x = self.conv(x)
        if self.remove:
            x = x[:, :, : -self.remove]
        return F.gelu(x)


class _Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h = c.num_attention_heads
        self.d = c.hidden_size // self.h
        self.q_proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.k_proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.v_proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.out_proj = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x):
        b, t, _ = x.shape
        q = (self.q_proj(x) * (self.d ** -0.5)).view(b, t, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.h, self.d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.h, self.d).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(2, 3), dim=-1) @ v
        return self.out_proj(a.transpose(1, 2).reshape(b, t, self.h * self.d))


class _FeedForward(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.intermediate_dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.output_dense = nn.Linear(c.intermediate_size, c.hidden_size)

    def forward(self, x):
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class _Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = _Attention(c)
        self.layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.feed_forward = _FeedForward(c)
        self.final_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x):
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


class _Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.pos_conv_embed = _PosConv(c)
        self.layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList([_Layer(c) for _ in range(c.num_hidden_layers)])

    def forward(self, x):
        x = x + self.pos_conv_embed(x.transpose(1, 2)).transpose(1, 2)
        x = self.layer_norm(x)
        for l in self.layers:
            x = l(x)
        return x


class HubertModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = HubertConfig({**_DEFAULTS, **dict(config)})
        if c.feat_extract_norm != "group" or c.do_stable_layer_norm or not c.feat_proj_layer_norm or c.conv_bias:
            raise NotImplementedError("transformers shim: only the chinese-hubert-base configuration is implemented")
        self.config = c
        self.feature_extractor = _FeatureEncoder(c)
        self.feature_projection = _FeatureProjection(c)
        self.encoder = _Encoder(c)
        self.masked_spec_embed = nn.Parameter(torch.zeros(c.hidden_size))  # used only when training with masks

    def forward(self, input_values):
        x = self.feature_extractor(input_values).transpose(1, 2)
        x = self.feature_projection(x)
        return {"last_hidden_state": self.encoder(x)}

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        with open(os.path.join(path, "config.json")) as f:
            model = cls(json.load(f))
        state = torch.load(os.path.join(path, "pytorch_model.bin"), map_location="cpu")
        state = {k[len("hubert."):] if k.startswith("hubert.") else k: v for k, v in state.items()}
        # older checkpoints name the weight-norm halves weight_g/weight_v, newer parametrizations original0/1
        state = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v
                 for k, v in state.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing:
            raise RuntimeError(f"transformers shim: {path}: missing weights {missing[:5]}")
        return model.eval()

    def save_pretrained(self, path):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(dict(self.config), f)
        torch.save(self.state_dict(), os.path.join(path, "pytorch_model.bin"))


# ---- BERT (chinese-roberta-wwm-ext-large) ------------------------------------------------------------
#
# AutoModelForMaskedLM.from_pretrained(dir) for a BERT checkpoint in the Hugging Face layout (config.json,
# pytorch_model.bin with keys bert.embeddings.*, bert.encoder.layer.N.*; LayerNorm gamma/beta as the older
# TensorFlow-converted files name them, or weight/bias), inference only:
# - embeddings: word + position (0..L-1) + token type, LayerNorm;
# - post-norm layers: x = LN(x + Wo·Attn(x)); x = LN(x + W2·GELU(W1·x)); attention q·k / sqrt(head_dim)
#   plus (1 − attention_mask)·min(float32) on the keys;
# - forward(input_ids, attention_mask, token_type_ids, output_hidden_states) returns {"hidden_states":
#   (embeddings, layer 1, …, layer N), "last_hidden_state"}; the masked-LM head (cls.*) and the pooler
#   are not built (GPT-SoVITS reads hidden_states only) and their weights are ignored.
# AutoTokenizer.from_pretrained(dir) reads vocab.txt (or tokenizer.json's vocabulary) and tokenises as
# BertTokenizer does Chinese text: lower-cased, one token per CJK character or punctuation mark, other
# runs of letters/digits looked up whole (no word pieces), [UNK] for what the vocabulary lacks.

_BERT_DEFAULTS = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                      max_position_embeddings=512, type_vocab_size=2, vocab_size=21128, layer_norm_eps=1e-12,
                      hidden_act="gelu", model_type="bert")


class _BertEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids, token_type_ids):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x)


class _BertSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h = c.num_attention_heads
        self.d = c.hidden_size // self.h
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x, bias):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.h, self.d).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(2, 3) / math.sqrt(self.d) + bias
        return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, self.h * self.d)


class _BertDenseNorm(nn.Module):
    """dense, then LayerNorm of the residual sum (BertSelfOutput / BertOutput)."""

    def __init__(self, cin, c):
        super().__init__()
        self.dense = nn.Linear(cin, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, y, residual):
        return self.LayerNorm(self.dense(y) + residual)


class _BertAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = _BertSelfAttention(c)
        self.output = _BertDenseNorm(c.hidden_size, c)

    def forward(self, x, bias):
        return self.output(self.self(x, bias), x)


class _BertIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x):
        return F.gelu(self.dense(x))


class _BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = _BertAttention(c)
        self.intermediate = _BertIntermediate(c)
        self.output = _BertDenseNorm(c.intermediate_size, c)

    def forward(self, x, bias):
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class _BertEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([_BertLayer(c) for _ in range(c.num_hidden_layers)])


class BertModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = HubertConfig({**_BERT_DEFAULTS, **dict(config)})
        if c.hidden_act != "gelu":
            raise NotImplementedError(f"transformers shim: BERT activation {c.hidden_act} not implemented")
        self.config = c
        self.embeddings = _BertEmbeddings(c)
        self.encoder = _BertEncoder(c)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False, **_):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        states = [x]
        for layer in self.encoder.layer:
            x = layer(x, bias)
            states.append(x)
        return {"last_hidden_state": x, "hidden_states": tuple(states) if output_hidden_states else None}


class BertForMaskedLM(nn.Module):
    """The encoder of BertForMaskedLM under its checkpoint name `bert`; the LM head is not built."""

    def __init__(self, config):
        super().__init__()
        self.bert = BertModel(config)
        self.config = self.bert.config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False, **kw):
        return self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states)

    @classmethod
    def from_pretrained(cls, path, output_hidden_states=False, **kwargs):
        with open(os.path.join(path, "config.json")) as f:
            model = cls(json.load(f))
        state = torch.load(os.path.join(path, "pytorch_model.bin"), map_location="cpu")
        renamed = {}
        for k, v in state.items():
            if not k.startswith("bert.") or k.startswith("bert.pooler.") or k.endswith("position_ids"):
                continue  # cls.* (LM head), pooler, position_ids buffer
            k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
            renamed[k] = v
        missing, unexpected = model.load_state_dict(renamed, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"transformers shim: {path}: BERT weights do not fit: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        return model.eval()

    def save_pretrained(self, path):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump({**dict(self.config), "architectures": ["BertForMaskedLM"]}, f)
        torch.save(self.state_dict(), os.path.join(path, "pytorch_model.bin"))


class AutoModelForMaskedLM:
    @staticmethod
    def from_pretrained(path, **kwargs):
        with open(os.path.join(path, "config.json")) as f:
            mt = json.load(f).get("model_type", "bert")
        if mt != "bert":
            raise NotImplementedError(f"transformers shim: AutoModelForMaskedLM for {mt} not implemented")
        return BertForMaskedLM.from_pretrained(path, **kwargs)


def read_bert_vocab(path):
    """The tokens of a BERT vocabulary in id order: vocab.txt (one per line), else tokenizer.json's model.vocab."""
    txt = os.path.join(path, "vocab.txt")
    if os.path.isfile(txt):
        with open(txt, encoding="utf-8") as f:
            return f.read().splitlines()
    with open(os.path.join(path, "tokenizer.json"), encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    tokens = [None] * (max(vocab.values()) + 1)
    for tok, i in vocab.items():
        tokens[i] = tok
    if any(t is None for t in tokens):
        raise ValueError(f"{path}/tokenizer.json: vocabulary ids are not contiguous")
    return tokens


def _is_cjk_or_punct(ch):
    import unicodedata

    cp = ord(ch)
    if (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F):
        return True
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


class BertTokenizer:
    def __init__(self, tokens):
        self.ids = {}
        for i, t in enumerate(tokens):
            self.ids.setdefault(t, i)
        self.cls, self.sep, self.unk = self.ids["[CLS]"], self.ids["[SEP]"], self.ids["[UNK]"]

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        return cls(read_bert_vocab(path))

    def tokenize_ids(self, text):
        out, word = [], ""
        for ch in text.lower() + " ":
            if ch.isspace() or _is_cjk_or_punct(ch):
                if word:
                    out.append(self.ids.get(word, self.unk))
                    word = ""
                if not ch.isspace():
                    out.append(self.ids.get(ch, self.unk))
            else:
                word += ch
        return [self.cls] + out + [self.sep]

    def __call__(self, text, return_tensors=None, **kwargs):
        ids = self.tokenize_ids(text)
        enc = {"input_ids": [ids], "token_type_ids": [[0] * len(ids)], "attention_mask": [[1] * len(ids)]}
        if return_tensors == "pt":
            enc = {k: torch.tensor(v, dtype=torch.int64) for k, v in enc.items()}
        return enc


class AutoTokenizer:
    @staticmethod
    def from_pretrained(path, **kwargs):
        return BertTokenizer.from_pretrained(path, **kwargs)
