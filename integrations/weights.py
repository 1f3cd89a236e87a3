"""Weights files of keel's learned models (`.npz`): their arrays beside the names of the
features, in column order, that they were trained on, so that a file trained on other features
is refused rather than misread."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def read_weights(path: Path, features: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays of `path`; ValueError when it was trained on other `features`."""
    with np.load(path) as stored:
        names = tuple(str(n) for n in stored["features"])
        if names != features:
            raise ValueError(f"{path} was trained on {names}, this keel reads {features}")
        return {name: stored[name] for name in stored.files if name != "features"}


def write_weights(
    path: Path, features: tuple[str, ...], arrays: Mapping[str, np.ndarray | float | int]
) -> None:
    """Writes `arrays` (float32, integer ones as they are) with the `features` they read."""
    stored: dict[str, Any] = {}  # Any: `savez` types its keywords as its own options
    for name, value in arrays.items():
        array = np.asarray(value)
        stored[name] = array if np.issubdtype(array.dtype, np.integer) else array.astype(np.float32)
    np.savez(path, features=np.array(features), **stored)
