"""The frozen run configuration. Entry points build it from flags (one flag per
field, help text from the field's metadata); the library only ever sees this
object, and every run writes it next to its checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os

CONFIG_FILE = "config.json"
MODELS = ("esmm", "esmm_ns", "base", "aman", "oversampling", "unbias", "division")
CORRUPT_SHARD_POLICIES = ("fail", "skip")  # see esmm_tf/shards.py
STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "parameter_server")

# Fields that may change when a run is resumed (they do not change the model).
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "checkpoint_every_steps",
        "log_every_steps",
        "eval_every_epochs",
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
        "esmm", f"Model to train: one of {', '.join(MODELS)} (see esmm_tf/objectives.py)."
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
    # Baselines (esmm_tf/objectives.py).
    aman_negative_rate: float = _f(
        0.1, "AMAN: probability that an unclicked impression is a CVR negative."
    )
    oversampling_k: float = _f(5.0, "OVERSAMPLING: weight (copies) of converted impressions.")
    unbias_min_ctr: float = _f(
        0.01, "UNBIAS: a clicked impression is kept with probability min(1, this / pCTR)."
    )
    # Data.
    train_fraction: float = _f(
        1.0, "Train on this fraction of the train records (sampled by a hash of the record)."
    )
    records_per_batch: int = _f(
        32, "Grouped records per step (x ~30 impressions per record on Ali-CCP)."
    )
    epochs: int = _f(1, "Passes over the train split.")
    shuffle_buffer: int = _f(4096, "Records in the shuffle buffer.")
    deterministic: bool = _f(False, "Fixed element order in the input pipeline (tests).")
    seed: int = _f(0, "Seed for initialisation and shuffling.")
    # Bookkeeping.
    checkpoint_every_steps: int = _f(500, "Steps between checkpoints.")
    log_every_steps: int = _f(100, "Steps between TensorBoard train summaries.")
    eval_every_epochs: int = _f(1, "Epochs between evaluations on the test split.")
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
        "--records_per_batch is the global batch.",
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
            "records_per_batch",
            "epochs",
            "checkpoint_every_steps",
            "log_every_steps",
            "eval_every_epochs",
            "keep_checkpoints",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be positive, got {self.learning_rate}")
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
        if self.oversampling_k < 1:
            raise ValueError(f"--oversampling_k must be >= 1, got {self.oversampling_k}")
        if not 0 < self.unbias_min_ctr <= 1:
            raise ValueError(f"--unbias_min_ctr must be in (0, 1], got {self.unbias_min_ctr}")
        if not self.tower_units or min(self.tower_units) <= 0:
            raise ValueError(f"--tower_units must be positive integers, got {self.tower_units}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        if "tower_units" in values:
            values["tower_units"] = tuple(values["tower_units"])
        return cls(**values)


def save(config: Config, model_dir: str) -> str:
    """Writes config.json to model_dir; refuses to resume with a different model."""
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
    with open(path + ".tmp", "w") as f:
        f.write(config.to_json())
    os.replace(path + ".tmp", path)
    return path


def load(model_dir: str) -> Config:
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: is {model_dir!r} the --model_dir of an esmm_tf.train run?"
        )
    with open(path) as f:
        return Config.from_dict(json.load(f))
