"""The frozen run configuration. Entry points build it from flags (one flag per
field, help text from the field's metadata); the library only ever sees this
object, and every run writes it next to its checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import os

from esmm_tf import files, registry

CONFIG_FILE = "config.json"
MODELS = registry.MODELS  # one spec per model: esmm_tf/registry.py
CORRUPT_SHARD_POLICIES = ("fail", "skip")  # see esmm_tf/shards.py
STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "parameter_server")
# Validation metrics for early stopping; log_loss is minimised, the AUCs maximised.
EARLY_STOPPING_METRICS = ("ctcvr_auc", "cvr_auc", "ctr_auc", "log_loss")

# Fields that may change when a run is resumed (they do not change the model).
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "checkpoint_every_steps",
        "log_every_steps",
        "eval_every_steps",
        "eval_impressions",
        "early_stopping_patience",
        "keep_checkpoints",
        "corrupt_shards",
        "strategy",
    }
)


def _f(default, help_text: str):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class Config:
    data_dir: str = _f("", "Converted dataset (the --out_dir of data_prep.convert).")
    model: str = _f(
        "esmm", f"Model to train: one of {', '.join(MODELS)} (see esmm_tf/registry.py)."
    )
    # Model.
    embedding_dim: int = _f(18, "Embedding dimension per field (paper: 18).")
    tower_units: tuple[int, ...] = _f((200, 80), "Hidden units of each tower (paper: 200,80).")
    use_weights: bool = _f(True, "Weight pooled ids by their raw values (weighted fields).")
    # Optimisation (Adam beta_1=0.9, beta_2=0.999, epsilon=1e-8 as in the paper).
    learning_rate: float = _f(1e-3, "Adam learning rate.")
    beta_1: float = _f(0.9, "Adam beta_1.")
    beta_2: float = _f(0.999, "Adam beta_2.")
    epsilon: float = _f(1e-8, "Adam epsilon.")
    lazy_adam: bool = _f(
        True, "Update only the embedding rows a batch touches (False: exact dense Adam)."
    )
    # Regularization (esmm_tf/regularization.py).
    embedding_l2: float = _f(
        0.0,
        "Mini-batch-aware L2 on embeddings (DIN): each step penalises only the rows the batch "
        "read, scaled by batch / train frequency of their ids; in expectation the same as "
        "this * sum of squares of every table added to the loss. 0: off.",
    )
    tower_l2: float = _f(
        0.0, "L2 on the towers' kernels: this * sum of their squares added to the loss. 0: off."
    )
    dropout: float = _f(0.0, "Dropout rate on the towers' hidden layers (training only). 0: off.")
    learning_rate_decay: float = _f(
        1.0, "Multiply the learning rate by this after every epoch (esmm_tf/schedules.py). 1: off."
    )
    # Baselines (esmm_tf/objectives.py).
    aman_negative_rate: float = _f(
        0.1, "AMAN: probability that an unclicked impression is a CVR negative."
    )
    oversampling_k: float = _f(5.0, "OVERSAMPLING: weight (copies) of converted impressions.")
    unbias_min_ctr: float = _f(
        0.01, "UNBIAS: a clicked impression is kept with probability min(1, this / pCTR)."
    )
    # ESCM² (esmm_tf/escm2.py): L = L_CTR + λ_c·L_CVR + λ_g·L_CTCVR.
    escm2_cvr_weight: float = _f(
        0.5, "ESCM²: λ_c, weight of the counterfactual CVR term (the authors advise 0.1-1)."
    )
    escm2_ctcvr_weight: float = _f(0.5, "ESCM²: λ_g, weight of the CTCVR term.")
    escm2_max_ips_weight: float = _f(
        15.0, "ESCM²: largest inverse propensity 1/pCTR (pCTR is clipped below at 1/this)."
    )
    # Data.
    train_fraction: float = _f(
        1.0,
        "Train on this fraction of the train requests (sampled by a hash of the request: "
        "its records are kept or left out together).",
    )
    batch_size: int = _f(
        1024,
        "Impressions per step: a step packs whole records (requests) up to this many "
        "impressions; a larger record is a step of its own. The global batch under a "
        "multi-worker strategy.",
    )
    epochs: int = _f(1, "Passes over the train split.")
    shuffle_buffer: int = _f(4096, "Records in the shuffle buffer.")
    deterministic: bool = _f(False, "Fixed element order in the input pipeline (tests).")
    seed: int = _f(0, "Seed for initialisation and shuffling.")
    # Bookkeeping.
    checkpoint_every_steps: int = _f(500, "Steps between checkpoints.")
    log_every_steps: int = _f(
        0, "Steps between TensorBoard train summaries; 0: about 50 per epoch."
    )
    eval_every_steps: int = _f(
        0,
        "Steps between evaluations during training, on the validation split (or, without "
        "one, on the test split, for monitoring only); 0: about 10 per epoch.",
    )
    eval_impressions: int = _f(
        200_000,
        "Impressions scored by each evaluation during training (the first ones of the "
        "split: a fixed sample); 0: the whole split. The final evaluation on the test "
        "split is always complete.",
    )
    validation_fraction: float = _f(
        0.0,
        "Carve this fraction of the train requests (by a hash of common_feature_index) out "
        "as a validation split: never trained on, used for evaluation during training, "
        "early stopping and the best checkpoint. 0: no validation split.",
    )
    early_stopping_metric: str = _f(
        "ctcvr_auc",
        f"Validation metric that selects the best checkpoint: one of {', '.join(EARLY_STOPPING_METRICS)} "
        "(AUCs: higher is better; log_loss = CTR + CTCVR log loss: lower is better).",
    )
    early_stopping_patience: int = _f(
        0,
        "Stop after this many evaluations without a better validation metric (0: never stop "
        "early; the best checkpoint is still kept).",
    )
    warm_start_from: str = _f(
        "",
        "Start from another run's model (its best, else last, checkpoint) and vocabulary; "
        "ids its vocabulary lacks map to OOV. The daily-retraining workflow.",
    )
    keep_checkpoints: int = _f(3, "Checkpoints kept.")
    corrupt_shards: str = _f(
        "fail",
        "A truncated or corrupted TFRecord shard: 'fail' stops with an error naming the file "
        "and byte offset; 'skip' checks every shard first and leaves the bad ones out "
        "(listed in eval_metrics.json).",
    )
    # Distribution (esmm_tf/distribute.py).
    strategy: str = _f(
        "default",
        "tf.distribute strategy: default (one process, one device), mirrored (synchronous "
        "over this host's GPUs), multi_worker_mirrored (synchronous, hosts from TF_CONFIG) or "
        "parameter_server (not supported yet). Under mirrored and multi_worker_mirrored "
        "--batch_size (impressions) is the global batch.",
    )

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"--model={self.model!r}; choose one of {', '.join(MODELS)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy={self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if not self.data_dir:
            raise ValueError("--data_dir is required")
        for name in (
            "embedding_dim",
            "batch_size",
            "epochs",
            "checkpoint_every_steps",
            "keep_checkpoints",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        for name in (
            "log_every_steps",
            "eval_every_steps",
            "eval_impressions",
            "early_stopping_patience",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"--validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if self.early_stopping_metric not in EARLY_STOPPING_METRICS:
            raise ValueError(
                f"--early_stopping_metric={self.early_stopping_metric!r}; choose one of "
                f"{', '.join(EARLY_STOPPING_METRICS)}"
            )
        if self.early_stopping_patience and not self.validation_fraction:
            raise ValueError(
                "--early_stopping_patience needs a validation split (--validation_fraction > 0): "
                "model selection never looks at the test split"
            )
        # Comparisons are written so that NaN fails them: "not x > 0", not "x <= 0".
        for name in ("learning_rate", "epsilon"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"--{name} must be positive and finite, got {getattr(self, name)}")
        for name in ("beta_1", "beta_2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("embedding_l2", "tower_l2"):
            if not 0 <= getattr(self, name) < math.inf:  # also refuses NaN
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.learning_rate_decay <= 1:
            raise ValueError(
                f"--learning_rate_decay must be in (0, 1], got {self.learning_rate_decay}"
            )
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train_fraction must be in (0, 1], got {self.train_fraction}")
        if not 0 <= self.aman_negative_rate <= 1:
            raise ValueError(
                f"--aman_negative_rate must be in [0, 1], got {self.aman_negative_rate}"
            )
        if self.corrupt_shards not in CORRUPT_SHARD_POLICIES:
            raise ValueError(
                f"--corrupt_shards must be one of {', '.join(CORRUPT_SHARD_POLICIES)}, "
                f"got {self.corrupt_shards!r}"
            )
        if not 1 <= self.oversampling_k < math.inf:
            raise ValueError(f"--oversampling_k must be >= 1, got {self.oversampling_k}")
        if not 0 < self.unbias_min_ctr <= 1:
            raise ValueError(f"--unbias_min_ctr must be in (0, 1], got {self.unbias_min_ctr}")
        for name in ("escm2_cvr_weight", "escm2_ctcvr_weight"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not 1 <= self.escm2_max_ips_weight < math.inf:
            raise ValueError(
                f"--escm2_max_ips_weight must be >= 1, got {self.escm2_max_ips_weight}"
            )
        if not self.tower_units or min(self.tower_units) <= 0:
            raise ValueError(f"--tower_units must be positive integers, got {self.tower_units}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        if "records_per_batch" in values:
            raise ValueError(
                f"this run was made by an older esmm_tf (records_per_batch="
                f"{values['records_per_batch']}): steps are now counted in impressions "
                "(--batch_size) and its checkpoints and vocabulary do not carry over; train "
                "a new --model_dir"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        if "tower_units" in values:
            values["tower_units"] = tuple(values["tower_units"])
        return cls(**values)


def save(config: Config, model_dir: str, extra: dict | None = None) -> str:
    """Writes config.json to model_dir (with ``extra`` keys, e.g. the vocabulary's
    fingerprint, beside the fields); refuses to resume with a different model."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, CONFIG_FILE)
    if os.path.exists(path):
        old = load(model_dir)
        changed = {
            f.name
            for f in dataclasses.fields(Config)
            if getattr(old, f.name) != getattr(config, f.name)
        }
        if changed - RESUMABLE_CHANGES:
            diff = ", ".join(
                f"{k}: {getattr(old, k)!r} -> {getattr(config, k)!r}"
                for k in sorted(changed - RESUMABLE_CHANGES)
            )
            raise ValueError(
                f"{model_dir} holds a run with another configuration ({diff}); "
                "use a new --model_dir or delete the old one"
            )
    values = {**(extra or {}), **dataclasses.asdict(config)}
    files.write_json(path, values)
    return path


def load(model_dir: str) -> Config:
    return Config.from_dict(load_json(model_dir))


# Keys every config.json has had: a file without them is not a run's config.
_RUN_KEYS = ("model", "data_dir", "embedding_dim", "tower_units")


def load_json(model_dir: str) -> dict:
    """config.json as written (the fields and the extra keys); a file that is
    not JSON, or not a run's config, is a ValueError naming it."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: is {model_dir!r} the --model_dir of an esmm_tf.train run?"
        )
    try:
        with open(path) as f:
            values = json.load(f)
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); the run's config is damaged") from None
    missing = [k for k in _RUN_KEYS if not isinstance(values, dict) or k not in values]
    if missing:
        raise ValueError(
            f"{path}: not an esmm_tf.train config (no {', '.join(missing)}); the run's "
            "config was replaced or damaged"
        )
    return values
