"""``python -m tests.multi_worker_driver --weights_out=W.npz <esmm_tf.train flags>``:
``esmm_tf.train`` exactly, except that each worker saves every variable of its
model and optimizer to ``--weights_out`` (.npz) when it reaches the final
barrier (after training; the chief has evaluated and exported), so that the
multi-worker test can compare the workers' copies."""

from __future__ import annotations

import numpy as np
from absl import app, flags

from esmm_tf import train, training_run

flags.DEFINE_string("weights_out", None, "Where to save this worker's final variables (.npz).")


def main(argv) -> None:
    built = []
    build_training, barrier = training_run.build_training, training_run._barrier

    def capture(*args, **kwargs):
        built.append(build_training(*args, **kwargs))
        return built[-1]

    def save_then_barrier(*args, **kwargs):
        model, optimizer, _ = built[-1]
        arrays = {f"model/{i}/{v.path}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)}
        for i, v in enumerate(optimizer.variables):
            arrays[f"optimizer/{i}/{v.name}"] = np.asarray(v.numpy())
        np.savez(flags.FLAGS.weights_out, **arrays)
        return barrier(*args, **kwargs)

    training_run.build_training, training_run._barrier = capture, save_then_barrier
    train.main(argv)


if __name__ == "__main__":
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()
    train.define_flags()
    flags.mark_flag_as_required("weights_out")
    app.run(main)
