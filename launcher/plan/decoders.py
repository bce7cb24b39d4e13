"""The layers of decoder-only language models, from a config dict: what the plan counts and where
LoRA adapters go, without building the model.

Standard library only (``launcher plan`` runs on login nodes). Each family's layout is written
from its transformers modeling code (``transformers/models/<family>/modeling_<family>.py``) and
tests/plan/test_architectures.py builds each family's real model, in several variants of its
switches, and compares every tensor. A ``model_type`` not in ``FAMILIES`` is not counted
(``UnknownLayout`` says so): a formula that only looks right would print a wrong number as exact.

Field names and derived defaults are each family's own: GPT-2's ``n_embd``/``n_inner`` (unset:
4 x ``n_embd``), Falcon's ``num_kv_heads`` and ``ffn_hidden_size``, a Llama-like ``head_dim``
(unset: hidden / heads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class UnknownLayout(ValueError):
    """The model's layers cannot be listed offline; the message says why."""


class Part(NamedTuple):
    """``count`` layers named ``name`` (the last part of the module path, which peft matches).

    ``embedding``: ``n_in`` rows of ``n_out``; ``linear``: ``n_in`` to ``n_out``, with a bias
    when ``bias``; ``norm``: a weight of ``n_out`` (and a bias when ``bias``). ``tied``: the
    output head whose weight is the embedding's. ``quantized``: bitsandbytes replaces it in
    QLoRA (transformers replaces exactly ``nn.Linear`` and ``Conv1D``, not subclasses such as
    ``FalconLinear``).
    """

    name: str
    kind: str
    n_in: int
    n_out: int
    count: int = 1
    bias: bool = False
    tied: bool = False
    quantized: bool = True


class Layout(NamedTuple):
    """A model's parts: the body, and its language-model head (the last part)."""

    hidden: int
    parts: list[Part]


def _flag(cfg: dict[str, Any], value: str | bool) -> bool:
    """A switch that is a config field's value (its name given) or fixed by the modeling code."""
    return bool(cfg.get(value)) if isinstance(value, str) else value


def _size(cfg: dict[str, Any], name: str, family: str) -> int:
    value = cfg.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UnknownLayout(f"the {family} config has no whole number {name} ({value!r})")
    return value


class Llamalike(NamedTuple):
    """Token embeddings, then per layer: attention (q, k, v and output projections, or one fused
    qkv projection), an MLP (gated: gate, up, down; or plain: up, down), norms; a final norm and
    the head. Switches are config field names (read) or fixed values."""

    qkv_bias: str | bool = "attention_bias"
    o_bias: str | bool = "attention_bias"
    mlp_bias: str | bool = False
    mlp: str = "gated"  # gated | gated_fused (phi3: gate_up_proj) | plain
    fused_qkv: bool = False  # phi3: qkv_proj
    norm: str = "rms"  # rms: weight | layer: weight and bias | none: no parameters (OLMo)
    norms_per_layer: int | Callable[[dict[str, Any]], int] = 2
    qk_norm: str = ""  # head: q_norm, k_norm of head_dim | full: of all heads | see stablelm
    names: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # fmt: skip
    head_bias: bool = False  # phi: lm_head has a bias

    def layout(self, cfg: dict[str, Any], family: str) -> Layout:
        hidden = _size(cfg, "hidden_size", family)
        layers = _size(cfg, "num_hidden_layers", family)
        heads = _size(cfg, "num_attention_heads", family)
        kv = cfg.get("num_key_value_heads") or heads
        head_dim = cfg.get("head_dim") or hidden // heads
        vocab = _size(cfg, "vocab_size", family)
        inter = _size(cfg, "intermediate_size", family)
        q, k, v, o, gate, up, down = self.names
        qkv_bias, o_bias = _flag(cfg, self.qkv_bias), _flag(cfg, self.o_bias)
        parts = [Part("embed_tokens", "embedding", vocab, hidden)]
        if self.fused_qkv:
            parts.append(Part("qkv_proj", "linear", hidden, (heads + 2 * kv) * head_dim, layers))
        else:
            parts += [
                Part(q, "linear", hidden, heads * head_dim, layers, qkv_bias),
                Part(k, "linear", hidden, kv * head_dim, layers, qkv_bias),
                Part(v, "linear", hidden, kv * head_dim, layers, qkv_bias),
            ]
        parts.append(Part(o, "linear", heads * head_dim, hidden, layers, o_bias))
        mlp_bias = _flag(cfg, self.mlp_bias)
        if self.mlp == "gated_fused":
            parts.append(Part("gate_up_proj", "linear", hidden, 2 * inter, layers, mlp_bias))
        elif self.mlp == "gated":
            parts += [
                Part(gate, "linear", hidden, inter, layers, mlp_bias),
                Part(up, "linear", hidden, inter, layers, mlp_bias),
            ]
        else:
            parts.append(Part(up, "linear", hidden, inter, layers, mlp_bias))
        parts.append(Part(down, "linear", inter, hidden, layers, mlp_bias))
        parts += self._norms(cfg, layers, hidden, heads, kv, head_dim)
        tied = bool(cfg.get("tie_word_embeddings"))
        parts.append(Part("lm_head", "linear", hidden, vocab, 1, self.head_bias, tied, False))
        return Layout(hidden, parts)

    def _norms(
        self, cfg: dict[str, Any], layers: int, hidden: int, heads: int, kv: int, head_dim: int
    ) -> list[Part]:
        if self.norm == "none":
            return []
        bias = self.norm == "layer"
        per_layer = self.norms_per_layer
        count = per_layer(cfg) if callable(per_layer) else per_layer
        parts = [Part("norm", "norm", 0, hidden, count * layers + 1, bias)]
        if self.qk_norm == "head":
            parts.append(Part("q_norm", "norm", 0, head_dim, 2 * layers))  # and k_norm
        elif self.qk_norm == "full":
            parts += [
                Part("q_norm", "norm", 0, heads * head_dim, layers),
                Part("k_norm", "norm", 0, kv * head_dim, layers),
            ]
        elif self.qk_norm == "phi" and cfg.get("qk_layernorm"):
            parts.append(Part("q_layernorm", "norm", 0, hidden // heads, 2 * layers, bias=True))
        elif self.qk_norm == "stablelm" and cfg.get("qk_layernorm"):
            # One LayerNorm (no bias) per head: q heads and key/value heads.
            parts.append(Part("norms", "norm", 0, head_dim, (heads + kv) * layers))
        return parts


def _gpt2(cfg: dict[str, Any]) -> Layout:
    """GPT-2: learned positions, Conv1D layers with biases, LayerNorms; an MLP of n_inner."""
    hidden = _size(cfg, "n_embd", "gpt2")
    layers = _size(cfg, "n_layer", "gpt2")
    vocab = _size(cfg, "vocab_size", "gpt2")
    inner = cfg.get("n_inner") or 4 * hidden
    parts = [
        Part("wte", "embedding", vocab, hidden),
        Part("wpe", "embedding", _size(cfg, "n_positions", "gpt2"), hidden),
        Part("ln", "norm", 0, hidden, 2 * layers + 1, bias=True),  # ln_1, ln_2; ln_f
        Part("c_attn", "linear", hidden, 3 * hidden, layers, bias=True),
        Part("c_proj", "linear", hidden, hidden, layers, bias=True),  # attention output
        Part("c_fc", "linear", hidden, inner, layers, bias=True),
        Part("c_proj", "linear", inner, hidden, layers, bias=True),  # MLP output
    ]
    if cfg.get("add_cross_attention"):
        parts += [
            Part("c_attn", "linear", hidden, 2 * hidden, layers, bias=True),  # keys, values
            Part("q_attn", "linear", hidden, hidden, layers, bias=True),
            Part("c_proj", "linear", hidden, hidden, layers, bias=True),
            Part("ln_cross_attn", "norm", 0, hidden, layers, bias=True),
        ]
    tied = bool(cfg.get("tie_word_embeddings"))
    parts.append(Part("lm_head", "linear", hidden, vocab, tied=tied, quantized=False))
    return Layout(hidden, parts)


def _falcon(cfg: dict[str, Any]) -> Layout:
    """Falcon: one fused query_key_value (multi-query by default; grouped in the "new decoder
    architecture" of Falcon-40B/180B), a plain MLP of ffn_hidden_size, LayerNorms."""
    hidden = _size(cfg, "hidden_size", "falcon")
    layers = _size(cfg, "num_hidden_layers", "falcon")
    heads = _size(cfg, "num_attention_heads", "falcon")
    vocab = _size(cfg, "vocab_size", "falcon")
    head_dim = hidden // heads
    kv = cfg.get("num_kv_heads") or heads
    new = bool(cfg.get("new_decoder_architecture"))
    if new:
        qkv = (2 * kv + heads) * head_dim
    elif cfg.get("multi_query"):
        qkv = hidden + 2 * head_dim
    else:
        qkv = 3 * hidden
    ffn = cfg.get("ffn_hidden_size") or 4 * hidden
    bias = bool(cfg.get("bias"))
    parallel_norms = cfg.get("num_ln_in_parallel_attn") or (2 if new else None)
    norms = 2 if not cfg.get("parallel_attn") or parallel_norms == 2 else 1
    parts = [
        Part("word_embeddings", "embedding", vocab, hidden),
        # FalconLinear subclasses nn.Linear: bitsandbytes leaves it unquantized.
        Part("query_key_value", "linear", hidden, qkv, layers, bias, quantized=False),
        Part("dense", "linear", hidden, hidden, layers, bias, quantized=False),
        Part("dense_h_to_4h", "linear", hidden, ffn, layers, bias, quantized=False),
        Part("dense_4h_to_h", "linear", ffn, hidden, layers, bias, quantized=False),
        Part("layernorm", "norm", 0, hidden, norms * layers + 1, bias=True),
    ]
    tied = bool(cfg.get("tie_word_embeddings"))
    parts.append(Part("lm_head", "linear", hidden, vocab, tied=tied, quantized=False))
    return Layout(hidden, parts)


def _gpt_neox(cfg: dict[str, Any]) -> Layout:
    """GPT-NeoX (Pythia): fused query_key_value, a plain MLP with biases, LayerNorms."""
    hidden = _size(cfg, "hidden_size", "gpt_neox")
    layers = _size(cfg, "num_hidden_layers", "gpt_neox")
    vocab = _size(cfg, "vocab_size", "gpt_neox")
    inter = _size(cfg, "intermediate_size", "gpt_neox")
    bias = bool(cfg.get("attention_bias"))
    parts = [
        Part("embed_in", "embedding", vocab, hidden),
        Part("query_key_value", "linear", hidden, 3 * hidden, layers, bias),
        Part("dense", "linear", hidden, hidden, layers, bias),
        Part("dense_h_to_4h", "linear", hidden, inter, layers, bias=True),
        Part("dense_4h_to_h", "linear", inter, hidden, layers, bias=True),
        Part("layer_norm", "norm", 0, hidden, 2 * layers + 1, bias=True),
    ]
    tied = bool(cfg.get("tie_word_embeddings"))
    parts.append(Part("lm_head", "linear", hidden, vocab, tied=tied, quantized=False))
    return Layout(hidden, parts)


def _one_norm_without_parallel_residual(cfg: dict[str, Any]) -> int:
    return 1 if cfg.get("use_parallel_residual") else 2


_LLAMA = Llamalike(mlp_bias="mlp_bias")
_PLAIN_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "", "c_fc", "c_proj")
FAMILIES: dict[str, Callable[[dict[str, Any]], Layout]] = {
    "llama": lambda cfg: _LLAMA.layout(cfg, "llama"),
    "mistral": lambda cfg: Llamalike().layout(cfg, "mistral"),
    "ministral": lambda cfg: Llamalike().layout(cfg, "ministral"),
    "granite": lambda cfg: _LLAMA.layout(cfg, "granite"),
    "qwen2": lambda cfg: Llamalike(qkv_bias=True, o_bias=False).layout(cfg, "qwen2"),
    "qwen3": lambda cfg: Llamalike(qk_norm="head").layout(cfg, "qwen3"),
    "gemma": lambda cfg: Llamalike().layout(cfg, "gemma"),
    "gemma2": lambda cfg: Llamalike(norms_per_layer=4).layout(cfg, "gemma2"),
    "gemma3_text": lambda cfg: Llamalike(norms_per_layer=4, qk_norm="head").layout(
        cfg, "gemma3_text"
    ),
    "olmo": lambda cfg: Llamalike(norm="none").layout(cfg, "olmo"),
    "olmo2": lambda cfg: Llamalike(qk_norm="full").layout(cfg, "olmo2"),
    "phi3": lambda cfg: Llamalike(
        qkv_bias=False, o_bias=False, fused_qkv=True, mlp="gated_fused"
    ).layout(cfg, "phi3"),
    "phi": lambda cfg: Llamalike(
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        mlp="plain",
        norm="layer",
        norms_per_layer=1,
        qk_norm="phi",
        names=("q_proj", "k_proj", "v_proj", "dense", "", "fc1", "fc2"),
        head_bias=True,
    ).layout(cfg, "phi"),
    "starcoder2": lambda cfg: Llamalike(
        qkv_bias="use_bias",
        o_bias="use_bias",
        mlp_bias="use_bias",
        mlp="plain",
        norm="layer",
        names=_PLAIN_NAMES,
    ).layout(cfg, "starcoder2"),  # fmt: skip
    "stablelm": lambda cfg: Llamalike(
        qkv_bias="use_qkv_bias",
        o_bias=False,
        norm="layer",
        norms_per_layer=_one_norm_without_parallel_residual,
        qk_norm="stablelm",
    ).layout(cfg, "stablelm"),  # fmt: skip
    "gpt2": _gpt2,
    "falcon": _falcon,
    "gpt_neox": _gpt_neox,
}


def decoder_layout(model_type: str, cfg: dict[str, Any]) -> Layout:
    """The layers of the causal LM of ``model_type`` built from ``cfg`` (every field: defaults
    included, ``launcher.architectures.full_config``)."""
    family = FAMILIES.get(model_type)
    if family is None:
        counted = ", ".join(sorted(FAMILIES))
        raise UnknownLayout(f"no parameter formula for {model_type} (the plan counts: {counted})")
    return family(cfg)
