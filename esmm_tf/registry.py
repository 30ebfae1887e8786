"""One spec per model: everything that tells one paper row from another.

Every model is field embeddings -> a CTR tower and a second tower (plus, for
ESCM²-DR, an imputation tower), trained with a CTR term on all impressions
and terms that depend on the model. A ``ModelSpec`` holds all of it:

* ``second_head``: what the second tower predicts, ``"cvr"`` or (DIVISION)
  ``"ctcvr"`` (``esmm_tf/model.py``);
* ``shared_embeddings``: one embedding set for every tower, or one per tower;
* ``ctcvr_loss``: a CTCVR term BCE(click·conversion, pCTCVR) over all
  impressions (pCTCVR = pCTR × pCVR, or DIVISION's CTCVR tower);
* ``cvr_loss``: the CVR tower's own term, a key of
  ``esmm_tf.objectives.CVR_LOSSES`` (its samples, weights and target), or
  None when pCVR has no loss of its own;
* ``loss_weights``: (λ_c, λ_g), the weights of the CVR and CTCVR terms,
  from the config (L = L_CTR + λ_c·L_CVR + λ_g·L_CTCVR);
* the display name and the paper's Table 2 numbers.

Adding a model is one entry here (plus, for a new kind of CVR term, one
function in ``esmm_tf/objectives.py``) and one ``experiments/<name>.flags``.
This module imports no TensorFlow: configs, flags and the experiment
runners read it cheaply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from esmm_tf.config import Config

SECOND_HEADS = ("cvr", "ctcvr")


def _unit_weights(config: Config) -> tuple[float, float]:
    del config
    return 1.0, 1.0


def _escm2_weights(config: Config) -> tuple[float, float]:
    return config.escm2_cvr_weight, config.escm2_ctcvr_weight


@dataclasses.dataclass(frozen=True)
class PaperAUC:
    """Ma et al. 2018, Table 2 (public Ali-CCP): AUC %, (mean, std) over 10 runs."""

    cvr: tuple[float, float]
    ctcvr: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    display: str
    summary: str
    second_head: str = "cvr"
    shared_embeddings: bool = False
    ctcvr_loss: bool = False
    cvr_loss: str | None = None
    imputation_tower: bool = False
    loss_weights: Callable[[Config], tuple[float, float]] = _unit_weights
    paper_table2: PaperAUC | None = None

    def __post_init__(self):
        if self.second_head not in SECOND_HEADS:
            raise ValueError(f"{self.name}: second_head must be one of {SECOND_HEADS}")
        if self.second_head == "ctcvr" and self.cvr_loss is not None:
            raise ValueError(f"{self.name}: a CTCVR second tower has no CVR term")
        if not self.ctcvr_loss and self.cvr_loss is None:
            raise ValueError(f"{self.name}: the second tower needs a loss")


# In Table 2's order (the paper's rows, then the models beyond the paper).
SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "base",
        "BASE",
        "CVR tower on clicked impressions: BCE(conversion, pCVR).",
        cvr_loss="clicked",
        paper_table2=PaperAUC((66.00, 0.37), (62.07, 0.45)),
    ),
    ModelSpec(
        "aman",
        "AMAN",
        "BASE plus unclicked impressions sampled with probability --aman_negative_rate "
        "as negatives (All Missing As Negative).",
        cvr_loss="aman",
        paper_table2=PaperAUC((65.21, 0.59), (63.53, 0.57)),
    ),
    ModelSpec(
        "oversampling",
        "OVERSAMPLING",
        "BASE with converted impressions weighted --oversampling_k (k copies).",
        cvr_loss="oversampling",
        paper_table2=PaperAUC((67.18, 0.32), (63.05, 0.48)),
    ),
    ModelSpec(
        "unbias",
        "UNBIAS",
        "BASE on clicked impressions kept with probability min(1, --unbias_min_ctr / pCTR) "
        "(rejection sampling).",
        cvr_loss="unbias",
        paper_table2=PaperAUC((66.65, 0.28), (63.56, 0.70)),
    ),
    ModelSpec(
        "division",
        "DIVISION",
        "A CTCVR tower on all impressions; pCVR = pCTCVR / pCTR clipped to [0, 1].",
        second_head="ctcvr",
        ctcvr_loss=True,
        paper_table2=PaperAUC((67.56, 0.48), (63.62, 0.09)),
    ),
    ModelSpec(
        "esmm_ns",
        "ESMM-NS",
        "ESMM with separate embeddings per tower.",
        ctcvr_loss=True,
        paper_table2=PaperAUC((68.25, 0.44), (64.44, 0.62)),
    ),
    ModelSpec(
        "esmm",
        "ESMM",
        "BCE(click, pCTR) + BCE(click·conversion, pCTR·pCVR) on all impressions, shared "
        "embeddings; pCVR has no loss of its own.",
        shared_embeddings=True,
        ctcvr_loss=True,
        paper_table2=PaperAUC((68.56, 0.37), (65.32, 0.49)),
    ),
    ModelSpec(
        "escm2_ipw",
        "ESCM²-IPS",
        "ESMM plus an inverse-propensity-weighted CVR term (Wang et al., SIGIR 2022).",
        shared_embeddings=True,
        ctcvr_loss=True,
        cvr_loss="ipw",
        loss_weights=_escm2_weights,
    ),
    ModelSpec(
        "escm2_dr",
        "ESCM²-DR",
        "ESMM plus a doubly robust CVR term with an imputation tower (Wang et al., SIGIR 2022).",
        shared_embeddings=True,
        ctcvr_loss=True,
        cvr_loss="dr",
        imputation_tower=True,
        loss_weights=_escm2_weights,
    ),
)

MODELS: tuple[str, ...] = tuple(s.name for s in SPECS)
_BY_NAME = {s.name: s for s in SPECS}


def get(name: str) -> ModelSpec:
    """The spec of model ``name``; a one-line error naming the choices otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
