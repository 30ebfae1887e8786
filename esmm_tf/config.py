"""The frozen run configuration. Entry points build it from flags; the library
only ever sees this object (and writes it next to the checkpoints)."""

from __future__ import annotations

import dataclasses
import json
import os

CONFIG_FILE = "config.json"
MODELS = ("esmm", "esmm_ns")


@dataclasses.dataclass(frozen=True)
class Config:
    data_dir: str
    model: str = "esmm"
    # Model.
    embedding_dim: int = 18
    tower_units: tuple[int, ...] = (200, 80)
    use_weights: bool = True
    # Optimisation (Adam beta_1=0.9, beta_2=0.999, epsilon=1e-8 as in the paper).
    learning_rate: float = 1e-3
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    lazy_adam: bool = True
    # Data.
    records_per_batch: int = 32
    epochs: int = 1
    shuffle_buffer: int = 4096
    deterministic: bool = False
    seed: int = 0
    # Bookkeeping.
    checkpoint_every_steps: int = 500
    log_every_steps: int = 100
    eval_every_epochs: int = 1
    keep_checkpoints: int = 3

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"--model={self.model!r}; choose one of {', '.join(MODELS)}")
        for name in ("embedding_dim", "records_per_batch", "epochs", "checkpoint_every_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be positive, got {self.learning_rate}")

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
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, CONFIG_FILE)
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
