"""esmm_tf/config_flags.py: flags generated from config dataclasses."""

from __future__ import annotations

import dataclasses

import pytest
from absl import flags

from esmm_tf import config_flags
from esmm_tf.config import Config


@dataclasses.dataclass(frozen=True)
class Example:
    out_dir: str  # where to write
    verbose: bool = False
    count: int = 3  # how many
    rate: float = 0.5
    """A rate in [0, 1],
    said in a docstring."""
    limit: int | None = None
    units: tuple[int, ...] = (200, 80)
    names: tuple[str, ...] = ("a", "b")
    mode: str = dataclasses.field(
        default="fast", metadata={"help": "How to run.", "choices": ("fast", "slow")}
    )
    label: str = "x"

    def __post_init__(self):
        if self.count < 0:
            raise ValueError(f"--count must be >= 0, got {self.count}")


def _parse(argv, dataclass_type=Example, **kw):
    values = flags.FlagValues()
    names = config_flags.define_flags(dataclass_type, values, **kw)
    values(["prog", *argv])
    return values, names


def test_types_and_defaults():
    values, names = _parse(["--out_dir=/o"])
    assert names == [f.name for f in dataclasses.fields(Example)]
    kinds = {name: type(values[name]).__name__ for name in names}
    assert kinds["verbose"] == "BooleanFlag"
    assert kinds["mode"] == "EnumFlag"
    assert values["units"].value == ["200", "80"]
    assert values["count"].value == 3 and values["rate"].value == 0.5
    assert values["limit"].value is None
    config = config_flags.config_from_flags(Example, values)
    assert config == Example(out_dir="/o")
    assert isinstance(config.units, tuple) and isinstance(config.units[0], int)


def test_help_from_metadata_comment_docstring_or_name():
    values, _ = _parse(["--out_dir=/o"])
    # The flags belong to the module that asked for them (--helpshort lists them).
    assert "count" in [f.name for f in values.get_key_flags_for_module(__name__)]
    assert values["mode"].help == "<fast|slow>: How to run."
    assert values["count"].help == "how many"
    assert values["out_dir"].help == "where to write"
    assert values["rate"].help == "A rate in [0, 1], said in a docstring."
    assert values["label"].help == "label"


def test_round_trip_of_non_defaults():
    want = Example(
        out_dir="/x",
        verbose=True,
        count=7,
        rate=0.25,
        limit=9,
        units=(5,),
        names=("p", "q", "r"),
        mode="slow",
        label="y",
    )
    argv = []
    for key, value in dataclasses.asdict(want).items():
        if isinstance(value, tuple):
            value = ",".join(map(str, value))
        argv.append(f"--{key}={value}")
    values, _ = _parse(argv)
    assert config_flags.config_from_flags(Example, values) == want


def test_required_fields():
    with pytest.raises(flags.IllegalFlagValueError, match="out_dir"):
        _parse([])
    with pytest.raises(flags.IllegalFlagValueError, match="label"):
        _parse(["--out_dir=/o"], required=["label"])
    values, _ = _parse(["--out_dir=/o", "--label=z"], required=["label"])
    assert config_flags.config_from_flags(Example, values).label == "z"


def test_bad_values_are_rejected():
    with pytest.raises(flags.IllegalFlagValueError, match="one of <fast\\|slow>"):
        _parse(["--out_dir=/o", "--mode=medium"])
    values, _ = _parse(["--out_dir=/o", "--units=3,x"])
    with pytest.raises(ValueError, match=r"--units=3,x: expected comma-separated ints"):
        config_flags.config_from_flags(Example, values)
    values, _ = _parse(["--out_dir=/o", "--count=-1"])
    with pytest.raises(ValueError, match="--count must be >= 0"):  # the dataclass's own check
        config_flags.config_from_flags(Example, values)


def test_exclude_and_overrides():
    values, names = _parse(["--out_dir=/o", "--count=4"], exclude=["label"])
    assert "label" not in names and "label" not in values
    config = config_flags.config_from_flags(Example, values, rate=0.75)
    assert (config.count, config.rate, config.label) == (4, 0.75, "x")
    with pytest.raises(TypeError, match="nope"):
        config_flags.config_from_flags(Example, values, nope=1)
    with pytest.raises(ValueError, match="nope"):
        _parse(["--out_dir=/o"], exclude=["nope"])


def test_unsupported_field_type():
    @dataclasses.dataclass
    class Bad:
        table: dict = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match="Bad.table"):
        config_flags.define_flags(Bad, flags.FlagValues())


def test_every_config_field_is_a_flag_with_help():
    values, names = _parse(["--data_dir=d"], dataclass_type=Config)
    assert names == [f.name for f in dataclasses.fields(Config)]
    assert all(values[n].help != n for n in names)
    assert config_flags.config_from_flags(Config, values) == Config(data_dir="d")


# The entry points' flags as they were spelled by hand before config_flags: name -> default
# (None for a required flag); the README and the tests use these names.
_ENTRY_POINT_FLAGS = {
    ("data_prep.convert", "ConvertConfig"): {
        "raw_dir": None,
        "out_dir": None,
        "min_count": 2,
        "max_bad_fraction": 0.001,
        "max_group_size": 256,
        "num_shards": 0,
        "workers": 0,
        "memory_budget_mb": 128,
        "keep_conversion_without_click": False,
        "overwrite": False,
        "vocab_from": None,
    },
    ("esmm_tf.evaluate", "EvaluateConfig"): {
        "model_dir": None,
        "data_dir": None,
        "split": "test",
        "checkpoint": "auto",
        "output_json": None,
        "progress": True,
    },
    ("esmm_tf.predict", "PredictConfig"): {
        "data_dir": None,
        "output": None,
        "model_dir": None,
        "saved_model": None,
        "split": "test",
        "checkpoint": "auto",
        "overwrite": False,
    },
    ("esmm_tf.export", "ExportConfig"): {
        "model_dir": None,
        "export_dir": None,
        "version": None,
        "warmup_records": 8,
        "checkpoint": "auto",
    },
}
_REQUIRED = {
    "ConvertConfig": {"raw_dir", "out_dir"},
    "EvaluateConfig": {"model_dir"},
    "PredictConfig": {"data_dir", "output"},
    "ExportConfig": {"model_dir", "export_dir"},
}


@pytest.mark.parametrize("module, name", sorted(_ENTRY_POINT_FLAGS))
def test_entry_point_flags_keep_their_names_and_defaults(module, name):
    import importlib

    config_type = getattr(importlib.import_module(module), name)
    required = _REQUIRED[name]
    argv = [f"--{n}=x" for n in sorted(required)]
    values, names = _parse(argv, dataclass_type=config_type)
    want = _ENTRY_POINT_FLAGS[module, name]
    assert {n: values[n].default for n in names} == want
    assert all(values[n].help != n for n in names)
    config = config_flags.config_from_flags(config_type, values)
    assert {n: getattr(config, n) for n in required} == dict.fromkeys(required, "x")
    for missing in required:
        with pytest.raises(flags.IllegalFlagValueError, match=missing):
            _parse([a for a in argv if not a.startswith(f"--{missing}=")], config_type)


NAN = float("nan")


@pytest.mark.parametrize(
    "field, value",
    [
        ("learning_rate", NAN),
        ("learning_rate", 0.0),
        ("learning_rate", float("inf")),
        ("tower_l2", float("inf")),
        ("escm2_max_ips_weight", float("inf")),
        ("epsilon", NAN),
        ("epsilon", 0.0),
        ("beta_1", NAN),
        ("beta_1", 1.0),
        ("beta_2", -0.1),
        ("embedding_l2", NAN),
        ("dropout", NAN),
        ("learning_rate_decay", NAN),
        ("train_fraction", NAN),
        ("validation_fraction", NAN),
        ("oversampling_k", NAN),
        ("unbias_min_ctr", NAN),
        ("aman_negative_rate", NAN),
        ("escm2_cvr_weight", NAN),
        ("escm2_max_ips_weight", NAN),
        ("batch_size", 0),
        ("tower_units", (16, 0)),
    ],
)
def test_training_options_out_of_range_are_refused(field, value):
    """Every numeric option is checked, NaN included (a NaN learning rate used
    to pass, and its run directory could then never be resumed: NaN != NaN)."""
    with pytest.raises(ValueError, match=f"--{field} must be "):
        Config(data_dir="data", **{field: value})
