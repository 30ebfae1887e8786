"""``python -m data_prep.synthetic --out_dir=DIR [--impressions=N] [--seed=S] ...``:
every field of ``SyntheticConfig`` is a flag of the same name (``--helpfull``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import app, flags

from data_prep.synthetic.config import SyntheticConfig
from data_prep.synthetic.generator import generate
from esmm_tf import config_flags


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """``--out_dir`` and one flag per ``SyntheticConfig`` field."""
    flags.DEFINE_string(
        "out_dir", None, "Directory to write the data set to.", flag_values=flag_values
    )
    flags.mark_flag_as_required("out_dir", flag_values=flag_values)
    flags.DEFINE_bool(
        "overwrite",
        False,
        "Replace raw logs in --out_dir that this generator did not write (no "
        "synthetic_config.json there: e.g. the real data); an earlier synthetic output "
        "there is replaced without it.",
        flag_values=flag_values,
    )
    config_flags.define_flags(SyntheticConfig, flag_values)


def main(argv: Sequence[str]) -> None:
    from esmm_tf.cli import no_arguments

    no_arguments(argv)
    out_dir = flags.FLAGS.out_dir
    try:
        config = config_flags.config_from_flags(SyntheticConfig)
        summary = generate(config, out_dir, overwrite=flags.FLAGS.overwrite)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except MemoryError:  # within the flags' bounds, but more than this machine has
        print(
            "error: out of memory: lower --num_users, --num_items, --chunk_rows, "
            "--impressions_per_row or --pilot_impressions (nothing was written)",
            file=sys.stderr,
        )
        sys.exit(1)
    total = summary["total"]
    print(
        f"wrote {total['impressions']:,} impressions ({total['rows']:,} common rows) to "
        f"{out_dir}: ctr {total['ctr']}, cvr|click {total['cvr_given_click']}, "
        f"oracle AUC {total['oracle_auc']}"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
