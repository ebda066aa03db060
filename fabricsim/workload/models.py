"""The MoE model catalog: architecture fields of the paper's models, and models from TOML.

A :class:`MoEModel` holds what the traffic and compute-time models need: layer counts, widths,
experts, top-k, attention heads and vocabulary. Layers are ordered dense first, then MoE (DeepSeek's
first three layers are dense).

Where the paper's *simulated* configuration differs from the public model card
(``../shared/reference/mfabric.md`` section 6), both are in the catalog. The plain name is the
paper's configuration (the default, so that ``fabricsim reproduce`` compares number for number),
``NAME-card`` the public model card:

============== ============================================================================
name           source
============== ============================================================================
mixtral-8x7b   Mixtral 8x7B; the paper's Table 1 agrees with the card
mixtral-8x22b  the released FlexFlow command (32 heads; the card has 48); ``-card``: HF card
llama-moe      LLaMA-MoE-3.5B (4/16), "LLaMA-MoE 6.7B" in Table 1; agrees with the card
qwen-moe       Table 1: 64 experts (the paper rounds 60 routed + 4 shared-size to 64), top-4
qwen-moe-32    section 7.3: "32 experts with 32-way EP"
qwen-moe-card  Qwen1.5-MoE-A2.7B: 60 routed experts + 1 shared expert of 4 x 1408
deepseek-r1    DeepSeek-V3 architecture: 3 dense + 58 MoE layers, 256 routed + 1 shared, top-8;
               multi-head latent attention is modelled as 128 full heads of 128
============== ============================================================================
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

__all__ = ["MoEModel", "CATALOG", "get_model", "load_model_toml", "model_names"]


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
        for f in ("dense_ffn", "shared_ffn", "head_dim"):
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

    @property
    def layers(self) -> int:
        """All transformer layers (dense + MoE)."""
        return self.dense_layers + self.moe_layers

    def is_moe_layer(self, layer: int) -> bool:
        """Layer ``layer`` (0-based, over all layers) has experts."""
        return layer >= self.dense_layers

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _catalog() -> dict:
    mixtral_8x22b = dict(dense_layers=0, moe_layers=56, hidden=6144, expert_ffn=16384,
                         routed_experts=8, top_k=2, kv_heads=8, vocab=32768)
    qwen = dict(dense_layers=0, moe_layers=24, hidden=2048, expert_ffn=1408, top_k=4,
                heads=16, kv_heads=16, vocab=151936)
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
        MoEModel("qwen-moe-32", routed_experts=32, **qwen,
                 description="Qwen1.5-MoE as the paper's section 7.3: 32 experts"),
        MoEModel("qwen-moe-card", routed_experts=60, shared_experts=1, shared_ffn=5632, **qwen,
                 description="Qwen1.5-MoE-A2.7B, model card: 60 routed + 1 shared (4 x 1408)"),
        MoEModel("deepseek-r1", dense_layers=3, moe_layers=58, hidden=7168, expert_ffn=2048,
                 dense_ffn=18432, routed_experts=256, shared_experts=1, top_k=8, heads=128,
                 kv_heads=128, head_dim=128, vocab=129280,
                 description="DeepSeek-R1 (V3 architecture; MLA modelled as 128 heads of 128)"),
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
