"""The MLP tower: embeddings -> hidden ReLU layers -> one logit."""

from __future__ import annotations

import keras


def tower(units: tuple[int, ...], name: str, seed: int) -> keras.Sequential:
    """``units`` ReLU layers then a 1-unit linear layer (the logit).

    The paper's towers are 360 -> 200 -> 80 -> 2 (a 2-way softmax); a single
    sigmoid logit is the same model. Each tower gets its own initializer
    seeds, so two towers never start identical.
    """
    layers = []
    for i, n in enumerate(units):
        layers.append(
            keras.layers.Dense(
                n,
                activation="relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i),
                name=f"{name}_hidden{i}",
            )
        )
    layers.append(
        keras.layers.Dense(
            1,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + len(units)),
            name=f"{name}_logit",
        )
    )
    return keras.Sequential(layers, name=name)
