"""The MoE model catalog: architecture fields of the paper's models, and models from TOML.

A :class:`MoEModel` holds what the traffic and compute-time models need: layer counts, widths,
experts, top-k, attention heads and vocabulary. Layers are ordered dense first, then MoE (DeepSeek's
first three layers are dense).

Where the paper's *simulated* configuration differs from the public model card
(``../shared/reference/mfabric.md`` section 6), both are in the catalog. The plain name is the
paper's configuration (the default, so that ``fabricsim reproduce`` compares number for number),
``NAME-card`` the public model card:

================== ========================================================================
name               source
================== ========================================================================
mixtral-8x7b       Mixtral 8x7B; the paper's Table 1 agrees with the card
mixtral-8x22b      the released FlexFlow command (32 heads; the card has 48); ``-card``: HF card
llama-moe          LLaMA-MoE-3.5B (4/16), "LLaMA-MoE 6.7B" in Table 1; agrees with the card
qwen-moe           Table 1: 64 experts, EP 16 (the paper rounds 60 routed + 4 shared-size to
                   64), top-4, no shared expert
qwen-moe-shared    Table 1's 64 routed experts plus the card's shared expert (4 x 1408 wide)
qwen-moe-32        section 7.3: "32 experts with 32-way EP", no shared expert
qwen-moe-32-shared section 7.3's 32 routed experts plus the card's shared expert
qwen-moe-card      Qwen1.5-MoE-A2.7B: 60 routed experts + 1 shared expert of 4 x 1408
deepseek-r1        DeepSeek-V3 architecture: 3 dense + 58 MoE layers, 256 routed + 1 shared,
                   top-8, multi-head latent attention (MLA) with the card's ranks
deepseek-r1-mha    the same with MLA replaced by 128 full heads of 128 (the catalog before
                   MLA was modelled; an upper bound on attention cost and parameters)
================== ========================================================================

The Qwen ``-shared`` entries exist because the card's 60 routed experts do not divide by Table 1's
EP 16: they switch the shared expert on at the paper's expert counts. The paper's simulator has no
shared-expert concept (the released FlexFlow command takes only ``--expnum``, ``--topk`` and
``--expert-hidden-size``) and its "64 experts" already count the shared expert as 4 expert widths
(60 + 4), so the plain ``qwen-moe`` and ``qwen-moe-32`` drop it; ``qwen-moe-shared`` has 64 + 4
expert widths of FFN per layer, 4 more than the card. :func:`resolve_model` picks the entry from
the modelling switches ``qwen``, ``qwen_shared`` and ``deepseek_attention``
(:mod:`fabricsim.profiles`).

**Attention.** ``attention = "mha"`` (the default) is multi-head (grouped-query when
``kv_heads < heads``) attention: W_Q (h x H d), W_K and W_V (h x K d), W_O (H d x h).
``attention = "mla"`` is DeepSeek's multi-head latent attention, in its training (non-absorbed)
form:

- queries: W_DQ (h x q_lora_rank), then W_UQ (q_lora_rank x H (qk_nope_head_dim +
  qk_rope_head_dim)); without ``q_lora_rank`` one W_Q (h x H (qk_nope + qk_rope));
- keys and values: W_DKV (h x (kv_lora_rank + qk_rope_head_dim)): the latent and the shared
  rotary key, then W_UKV (kv_lora_rank x H (qk_nope_head_dim + v_head_dim));
- output: W_O (H v_head_dim x h); scores over ``qk_nope + qk_rope`` per head, values over
  ``v_head_dim``.

The down-projections (W_DQ, W_DKV) act on the whole hidden vector and are not split by tensor
parallelism (DeepSeek-V3's reference code uses a plain ``Linear`` for them and column/row-parallel
layers for W_UQ, W_UKV and W_O): every TP rank holds and runs them whole. RMSNorm weights (MLA's
two latent norms, the layers' two norms, the final norm) are not counted, as nowhere in the
catalog (16,384 per DeepSeek layer, about 1M in all: 0.00015% of the model).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fabricsim.errors import ConfigError, require

__all__ = ["MoEModel", "CATALOG", "ATTENTION_KINDS", "get_model", "load_model_toml",
           "model_names", "resolve_model"]

ATTENTION_KINDS = ("mha", "mla")
_MLA_FIELDS = ("q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
               "v_head_dim")


@dataclass(frozen=True)
class MoEModel:
    """One model's architecture. Widths are in elements (not bytes).

    - ``dense_layers``, ``moe_layers``: transformer layers with a dense FFN / with experts (dense
      first).
    - ``hidden``: model width h. ``expert_ffn``: one routed expert's FFN width.
    - ``dense_ffn``: the FFN width of a dense layer (defaults to ``expert_ffn``).
    - ``routed_experts``, ``shared_experts``: per MoE layer; ``shared_ffn`` is one shared expert's
      width (defaults to ``expert_ffn``). ``top_k``: routed experts per token.
    - ``heads``, ``kv_heads``, ``head_dim`` (defaults to hidden / heads): attention.
    - ``attention``: ``"mha"`` (default) or ``"mla"`` (module docstring). MLA needs
      ``kv_heads == heads``, ``kv_lora_rank`` and ``qk_rope_head_dim``; ``q_lora_rank`` None means
      uncompressed queries; ``qk_nope_head_dim`` and ``v_head_dim`` default to ``head_dim``. The
      five MLA fields must be left unset with ``"mha"``.
    - ``vocab``: vocabulary size (embedding and LM head).
    FFNs are gated (SwiGLU: three h x f matrices), as in every model of the catalog.
    """

    name: str
    dense_layers: int
    moe_layers: int
    hidden: int
    expert_ffn: int
    routed_experts: int
    top_k: int
    heads: int
    kv_heads: int
    vocab: int
    shared_experts: int = 0
    dense_ffn: Optional[int] = None
    shared_ffn: Optional[int] = None
    head_dim: Optional[int] = None
    attention: str = "mha"
    q_lora_rank: Optional[int] = None
    kv_lora_rank: Optional[int] = None
    qk_rope_head_dim: Optional[int] = None
    qk_nope_head_dim: Optional[int] = None
    v_head_dim: Optional[int] = None
    description: str = ""

    def __post_init__(self):
        m = f"model {self.name!r}"
        for f in ("moe_layers", "hidden", "expert_ffn", "routed_experts", "top_k", "heads",
                  "kv_heads", "vocab"):
            v = getattr(self, f)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{m}.{f}",
                    f"must be a positive integer, got {v!r}")
        for f in ("dense_layers", "shared_experts"):
            v = getattr(self, f)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"{m}.{f}",
                    f"must be a non-negative integer, got {v!r}")
        for f in ("dense_ffn", "shared_ffn", "head_dim") + _MLA_FIELDS:
            v = getattr(self, f)
            require(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                    f"{m}.{f}", f"must be a positive integer, got {v!r}")
        require(self.top_k <= self.routed_experts, f"{m}.top_k",
                f"must be <= routed_experts ({self.routed_experts}), got {self.top_k}")
        require(self.heads % self.kv_heads == 0, f"{m}.kv_heads",
                f"must divide heads ({self.heads}), got {self.kv_heads}")
        if self.dense_ffn is None:
            object.__setattr__(self, "dense_ffn", self.expert_ffn)
        if self.shared_ffn is None:
            object.__setattr__(self, "shared_ffn", self.expert_ffn)
        if self.head_dim is None:
            require(self.hidden % self.heads == 0, f"{m}.head_dim",
                    f"is required when heads ({self.heads}) does not divide hidden ({self.hidden})")
            object.__setattr__(self, "head_dim", self.hidden // self.heads)
        require(self.attention in ATTENTION_KINDS, f"{m}.attention",
                f"must be one of {', '.join(ATTENTION_KINDS)}, got {self.attention!r}")
        if self.attention == "mha":
            for f in _MLA_FIELDS:
                require(getattr(self, f) is None, f"{m}.{f}",
                        f"applies to attention = 'mla' only (attention is 'mha'), got "
                        f"{getattr(self, f)!r}")
            return
        require(self.kv_heads == self.heads, f"{m}.kv_heads",
                f"must equal heads ({self.heads}) with attention = 'mla' (the latent is "
                f"decompressed into keys and values for every head), got {self.kv_heads}")
        for f in ("kv_lora_rank", "qk_rope_head_dim"):
            require(getattr(self, f) is not None, f"{m}.{f}",
                    "is required with attention = 'mla'")
        for f in ("qk_nope_head_dim", "v_head_dim"):
            if getattr(self, f) is None:
                object.__setattr__(self, f, self.head_dim)

    @property
    def layers(self) -> int:
        """All transformer layers (dense + MoE)."""
        return self.dense_layers + self.moe_layers

    def is_moe_layer(self, layer: int) -> bool:
        """Layer ``layer`` (0-based, over all layers) has experts."""
        return layer >= self.dense_layers

    @property
    def qk_head_dim(self) -> int:
        """Per-head width of queries and keys (the attention scores' inner dimension)."""
        if self.attention == "mla":
            return self.qk_nope_head_dim + self.qk_rope_head_dim
        return self.head_dim

    @property
    def value_head_dim(self) -> int:
        """Per-head width of values (and of the output projection's input)."""
        return self.v_head_dim if self.attention == "mla" else self.head_dim

    def attention_matrices(self) -> tuple:
        """The weight matrices of one attention block, ``(name, rows, cols, tp_split)`` each:
        ``tp_split`` False for those every TP rank holds whole (MLA's down-projections)."""
        h, H = self.hidden, self.heads
        if self.attention == "mha":
            return (("W_Q", h, H * self.head_dim, True),
                    ("W_K", h, self.kv_heads * self.head_dim, True),
                    ("W_V", h, self.kv_heads * self.head_dim, True),
                    ("W_O", H * self.head_dim, h, True))
        q_out = H * self.qk_head_dim
        if self.q_lora_rank is None:
            q = (("W_Q", h, q_out, True),)
        else:
            q = (("W_DQ", h, self.q_lora_rank, False),
                 ("W_UQ", self.q_lora_rank, q_out, True))
        return q + (("W_DKV", h, self.kv_lora_rank + self.qk_rope_head_dim, False),
                    ("W_UKV", self.kv_lora_rank, H * (self.qk_nope_head_dim + self.v_head_dim),
                     True),
                    ("W_O", H * self.v_head_dim, h, True))

    def attention_params_split(self) -> tuple:
        """``(split, whole)``: parameters of one attention block that tensor parallelism splits,
        and those every TP rank holds whole (MLA's down-projections; 0 for MHA)."""
        split = whole = 0
        for _, rows, cols, tp_split in self.attention_matrices():
            if tp_split:
                split += rows * cols
            else:
                whole += rows * cols
        return split, whole

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _catalog() -> dict:
    mixtral_8x22b = dict(dense_layers=0, moe_layers=56, hidden=6144, expert_ffn=16384,
                         routed_experts=8, top_k=2, kv_heads=8, vocab=32768)
    qwen = dict(dense_layers=0, moe_layers=24, hidden=2048, expert_ffn=1408, top_k=4,
                heads=16, kv_heads=16, vocab=151936)
    deepseek = dict(dense_layers=3, moe_layers=58, hidden=7168, expert_ffn=2048, dense_ffn=18432,
                    routed_experts=256, shared_experts=1, top_k=8, heads=128, kv_heads=128,
                    head_dim=128, vocab=129280)
    models = [
        MoEModel("mixtral-8x7b", dense_layers=0, moe_layers=32, hidden=4096, expert_ffn=14336,
                 routed_experts=8, top_k=2, heads=32, kv_heads=8, vocab=32000,
                 description="Mixtral 8x7B (paper Table 1 = model card)"),
        MoEModel("mixtral-8x22b", heads=32, **mixtral_8x22b,
                 description="Mixtral 8x22B as the paper simulated it (FlexFlow: 32 heads)"),
        MoEModel("mixtral-8x22b-card", heads=48, **mixtral_8x22b,
                 description="Mixtral 8x22B, Hugging Face model card (48 heads)"),
        MoEModel("llama-moe", dense_layers=0, moe_layers=32, hidden=4096, expert_ffn=688,
                 routed_experts=16, top_k=4, heads=32, kv_heads=32, vocab=32000,
                 description="LLaMA-MoE-3.5B (4/16), 6.7B total (paper Table 1 = model card)"),
        MoEModel("qwen-moe", routed_experts=64, **qwen,
                 description="Qwen1.5-MoE 14.3B as the paper's Table 1: 64 experts, top-4"),
        MoEModel("qwen-moe-shared", routed_experts=64, shared_experts=1, shared_ffn=5632, **qwen,
                 description="Qwen1.5-MoE, Table 1's 64 experts + the card's shared expert "
                 "(4 x 1408)"),
        MoEModel("qwen-moe-32", routed_experts=32, **qwen,
                 description="Qwen1.5-MoE as the paper's section 7.3: 32 experts"),
        MoEModel("qwen-moe-32-shared", routed_experts=32, shared_experts=1, shared_ffn=5632,
                 **qwen, description="Qwen1.5-MoE, section 7.3's 32 experts + the card's shared "
                 "expert (4 x 1408)"),
        MoEModel("qwen-moe-card", routed_experts=60, shared_experts=1, shared_ffn=5632, **qwen,
                 description="Qwen1.5-MoE-A2.7B, model card: 60 routed + 1 shared (4 x 1408)"),
        MoEModel("deepseek-r1", attention="mla", q_lora_rank=1536, kv_lora_rank=512,
                 qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128, **deepseek,
                 description="DeepSeek-R1 (V3 architecture, multi-head latent attention)"),
        MoEModel("deepseek-r1-mha", **deepseek,
                 description="DeepSeek-R1 with MLA replaced by 128 full heads of 128"),
    ]
    return {m.name: m for m in models}


CATALOG: dict = _catalog()


def model_names() -> list:
    return sorted(CATALOG)


def load_model_toml(path) -> MoEModel:
    """A model from a TOML file with the fields of :class:`MoEModel` at top level (``name``
    defaults to the file name without extension)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError("model", f"cannot read model file {path!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("model", f"{path}: not valid TOML: {e}") from None
    allowed = [f.name for f in dataclasses.fields(MoEModel)]
    for key in data:
        require(key in allowed, f"model.{key}", f"unknown key in {path}; allowed keys: "
                f"{', '.join(allowed)}")
    data.setdefault("name", os.path.splitext(os.path.basename(str(path)))[0])
    for f in ("dense_layers", "moe_layers", "hidden", "expert_ffn", "routed_experts", "top_k",
              "heads", "kv_heads", "vocab"):
        if f != "dense_layers":
            require(f in data, f"model.{f}", f"is required in {path}")
    data.setdefault("dense_layers", 0)
    return MoEModel(**data)


def get_model(model) -> MoEModel:
    """A catalog name (``mixtral-8x7b``), a path to a model TOML file, or a :class:`MoEModel`."""
    if isinstance(model, MoEModel):
        return model
    require(isinstance(model, str), "model", f"must be a model name or a TOML path, got {model!r}")
    if model in CATALOG:
        return CATALOG[model]
    if model.endswith(".toml") or os.path.sep in model:
        return load_model_toml(model)
    raise ConfigError("model", f"unknown model {model!r}; built in: {', '.join(model_names())} "
                      "(or a path to a model .toml file)")


_QWEN = {("table1", False): "qwen-moe", ("table1", True): "qwen-moe-shared",
         ("sec7.3", False): "qwen-moe-32", ("sec7.3", True): "qwen-moe-32-shared"}
_QWEN_SHARED = {"dropped": False, "kept": True, False: False, True: True}
_DEEPSEEK = {"mla": "deepseek-r1", "mha": "deepseek-r1-mha"}


def resolve_model(name: str, *, qwen: str = "table1", qwen_shared="dropped",
                  deepseek_attention: str = "mla") -> str:
    """The catalog name that the modelling switches select for the paper's model ``name``.

    - ``qwen-moe``: ``qwen`` ``"table1"`` (64 experts) or ``"sec7.3"`` (32), and ``qwen_shared``
      ``"dropped"`` / ``False`` or ``"kept"`` / ``True`` (the card's shared expert):
      ``qwen-moe``, ``qwen-moe-shared``, ``qwen-moe-32``, ``qwen-moe-32-shared``.
    - ``deepseek-r1``: ``deepseek_attention`` ``"mla"`` (``deepseek-r1``) or ``"mha"``
      (``deepseek-r1-mha``).

    Any other name (another model, an explicit variant such as ``qwen-moe-32``, a TOML path) is
    returned unchanged. Every switch is validated whatever the model (ConfigError naming it).
    """
    require(isinstance(name, str), "model", f"must be a model name or a TOML path, got {name!r}")
    require(isinstance(qwen, str) and qwen in ("table1", "sec7.3"), "qwen",
            f"must be one of table1, sec7.3, got {qwen!r}")
    require(isinstance(qwen_shared, (str, bool)) and qwen_shared in _QWEN_SHARED, "qwen_shared",
            f"must be one of dropped, kept (or false, true), got {qwen_shared!r}")
    require(isinstance(deepseek_attention, str) and deepseek_attention in _DEEPSEEK,
            "deepseek_attention", f"must be one of mla, mha, got {deepseek_attention!r}")
    if name == "qwen-moe":
        return _QWEN[(qwen, _QWEN_SHARED[qwen_shared])]
    if name == "deepseek-r1":
        return _DEEPSEEK[deepseek_attention]
    return name
