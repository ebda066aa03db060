"""Parallel placement: which (pp stage, dp replica, ep rank, tp rank) each GPU holds.

The default is the released MixNet simulator's rule, tp innermost, then ep, then dp, pp outermost::

    gpu = ((pp_stage * dp + dp_rank) * ep + ep_rank) * tp + tp_rank

so the expert-parallel rank of a GPU is ``e = (gpu // tp) mod ep``, an EP group (the ep * tp GPUs
of one stage and replica) is a contiguous block of GPUs, and a MixNet region (one EP group) is
``ep * tp / gpus_per_server`` contiguous servers. Attention and dense layers are data-parallel
over the ``dp * ep`` GPUs with the same (stage, tp rank); a rank's experts are replicated over its
``tp`` GPUs and the ``dp`` replicas (split over tp instead with the workload's ``expert_tp``).

Layers go to stages in contiguous blocks: ``layer_split="even"`` needs the layer count divisible
by pp; ``"balanced"`` gives the first ``layers mod pp`` stages one layer more (DeepSeek-R1's 61
layers on 16 stages).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fabricsim.errors import ConfigError, require
from fabricsim.workload.models import MoEModel, get_model

__all__ = ["Placement", "place", "LAYER_SPLITS"]

LAYER_SPLITS = ("even", "balanced")


def _positive_int(value, name):
    require(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1,
            name, f"must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Placement:
    """Degrees, layer split and per-GPU rank arrays (all ``int64[gpus]``)."""

    model: MoEModel
    gpus: int
    dp: int
    tp: int
    pp: int
    ep: int
    gpus_per_server: int
    stage_layers: tuple  # layers per stage, sum = model.layers
    tp_rank: np.ndarray
    ep_rank: np.ndarray
    dp_rank: np.ndarray
    stage: np.ndarray
    server: np.ndarray

    @property
    def servers(self) -> int:
        return self.gpus // self.gpus_per_server

    @property
    def experts_per_rank(self) -> int:
        return self.model.routed_experts // self.ep

    @property
    def stage_first_layer(self) -> tuple:
        """Index of each stage's first layer (over all layers)."""
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.stage_layers)[:-1]]))

    def layer_stage(self, layer: int) -> int:
        return int(np.searchsorted(np.cumsum(self.stage_layers), layer, side="right"))

    def gpu(self, stage, dp_rank, ep_rank, tp_rank):
        """The GPU id of a rank tuple (scalars or broadcastable arrays)."""
        return ((np.asarray(stage) * self.dp + dp_rank) * self.ep + ep_rank) * self.tp + tp_rank

    def ep_group(self, stage: int, dp_rank: int) -> np.ndarray:
        """The ep * tp GPUs of one EP group, ``[ep_rank, tp_rank]`` flattened (int64[ep*tp])."""
        first = self.gpu(stage, dp_rank, 0, 0)
        return np.arange(first, first + self.ep * self.tp, dtype=np.int64)

    def describe(self) -> dict:
        return {"gpus": self.gpus, "dp": self.dp, "tp": self.tp, "pp": self.pp, "ep": self.ep,
                "gpus_per_server": self.gpus_per_server, "servers": self.servers,
                "stage_layers": list(self.stage_layers),
                "experts_per_rank": self.experts_per_rank}


def place(model, gpus: int, *, dp: int = 1, tp: int = 1, pp: int = 1, ep: int = 1,
          gpus_per_server: int = 8, layer_split: str = "even") -> Placement:
    """Place ``model`` on ``gpus`` GPUs with degrees dp, tp, pp, ep (see the module docstring).

    Every rule that fails raises one :class:`~fabricsim.errors.ConfigError` naming it.
    """
    model = get_model(model)
    gpus = _positive_int(gpus, "gpus")
    dp, tp, pp, ep = (_positive_int(v, n) for v, n in ((dp, "dp"), (tp, "tp"), (pp, "pp"), (ep, "ep")))
    gps = _positive_int(gpus_per_server, "gpus_per_server")
    require(dp * tp * pp * ep == gpus, "parallelism",
            f"dp * tp * pp * ep must equal the GPU count {gpus}, got {dp}*{tp}*{pp}*{ep} = "
            f"{dp * tp * pp * ep}")
    require(gpus % gps == 0, "gpus", f"must be a multiple of gpus_per_server ({gps}), got {gpus}")
    require(tp <= gps and gps % tp == 0, "tp",
            f"must divide the GPUs of one server ({gps}) so that a TP group stays inside a server "
            f"(NVLink), got {tp}")
    require(model.routed_experts % ep == 0, "ep",
            f"must divide the routed experts of {model.name} ({model.routed_experts}), got {ep}")
    require(model.heads % tp == 0, "tp",
            f"must divide the attention heads of {model.name} ({model.heads}), got {tp}")
    require(layer_split in LAYER_SPLITS, "layer_split",
            f"must be one of {', '.join(LAYER_SPLITS)}, got {layer_split!r}")
    layers = model.layers
    require(pp <= layers, "pp", f"must be <= the layers of {model.name} ({layers}), got {pp}")
    if layer_split == "even":
        if layers % pp:
            raise ConfigError("pp", f"the {layers} layers of {model.name} are not divisible by "
                              f"pp = {pp}; use layer_split = 'balanced' (CLI: --layer-split balanced; the first {layers % pp} "
                              "stages get one layer more)")
        stage_layers = (layers // pp,) * pp
    else:
        base, extra = divmod(layers, pp)
        stage_layers = tuple(base + (1 if s < extra else 0) for s in range(pp))
    g = np.arange(gpus, dtype=np.int64)
    return Placement(model=model, gpus=gpus, dp=dp, tp=tp, pp=pp, ep=ep, gpus_per_server=gps,
                     stage_layers=stage_layers, tp_rank=g % tp, ep_rank=(g // tp) % ep,
                     dp_rank=(g // (tp * ep)) % dp, stage=g // (tp * ep * dp), server=g // gps)
