"""``python -m tests.multi_worker_driver --weights_out=W.npz <esmm_tf.train flags>``:
``esmm_tf.train`` exactly, except that each worker records what it trained on
and what it ended with, for the multi-worker test to compare:

* ``W.npz``: every variable of its model and optimizer when it reaches the
  final barrier (after training; the chief has evaluated and exported);
* ``W.batches.pkl``: the model's variables when built (before any restore)
  and the (inputs, labels) of every train step it took, as numpy arrays."""

from __future__ import annotations

import pickle

import numpy as np
from absl import app, flags

from esmm_tf import train, training_run

flags.DEFINE_string("weights_out", None, "Where to save this worker's final variables (.npz).")


def batches_path(weights_out: str) -> str:
    return f"{weights_out}.batches.pkl"


def main(argv) -> None:
    built, steps = [], []
    build_training, barrier = training_run.build_training, training_run._barrier

    def to_numpy(structure):
        return {k: np.asarray(v.numpy()) for k, v in structure.items()}

    def capture(*args, **kwargs):
        model, optimizer, step = build_training(*args, **kwargs)
        built.append((model, optimizer, [np.asarray(v.numpy()) for v in model.weights]))

        def recording_step(inputs, labels):
            steps.append((to_numpy(inputs), to_numpy(labels)))
            return step(inputs, labels)

        return model, optimizer, recording_step

    def save_then_barrier(*args, **kwargs):
        model, optimizer, initial = built[-1]
        arrays = {f"model/{i}/{v.path}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)}
        for i, v in enumerate(optimizer.variables):
            arrays[f"optimizer/{i}/{v.name}"] = np.asarray(v.numpy())
        np.savez(flags.FLAGS.weights_out, **arrays)
        with open(batches_path(flags.FLAGS.weights_out), "wb") as f:
            pickle.dump({"initial": initial, "steps": steps}, f)
        return barrier(*args, **kwargs)

    training_run.build_training, training_run._barrier = capture, save_then_barrier
    train.main(argv)


if __name__ == "__main__":
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()
    train.define_flags()
    flags.mark_flag_as_required("weights_out")
    app.run(main)
