"""The ranges a run's parameters must lie in, written once for every front end.

The Scipion form (its ``_validate``), the re-threshold protocol and the command line
refuse a value outside them before anything runs, each naming the parameter in its own
words (the form's label, the flag).  A value outside would otherwise fail deep inside a
stage (a negative radius in the consensus, no epoch in the training), or worse, run and
mean nothing (a negative pixel size, a learning rate of 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from .box_policy import MIN_BOX


@dataclass(frozen=True)
class ParameterRange:
    """What a parameter's value must be: ``accepts`` tells, ``text`` says it after
    "must be"."""

    accepts: Callable[[float], bool]
    text: str


def _automatic_or_length(value: float) -> bool:
    return value == -1 or value >= 0


RANGES: Dict[str, ParameterRange] = {
    "radius": ParameterRange(lambda v: 0 < v <= 1, "in (0, 1]"),
    "negative_ratio": ParameterRange(lambda v: v > 0, "positive"),
    "negative_distance": ParameterRange(lambda v: 0 <= v <= 2, "in [0, 2] boxes"),
    "network_size": ParameterRange(lambda v: 16 <= v <= 512, "in [16, 512] px"),
    "max_epochs": ParameterRange(lambda v: v >= 1, "at least 1"),
    "epoch_particles": ParameterRange(lambda v: v == 0 or v >= 100,
                                      "0 (every box) or at least 100"),
    "patience": ParameterRange(lambda v: v >= 1, "at least 1"),
    "learning_rate": ParameterRange(lambda v: 0 < v < 1, "in (0, 1)"),
    "batch_size": ParameterRange(lambda v: v >= 2, "at least 2"),
    "threshold": ParameterRange(lambda v: 0 <= v <= 1, "in [0, 1]"),
    "min_distance": ParameterRange(_automatic_or_length, "-1 (automatic) or at least 0 A"),
    "edge_margin": ParameterRange(_automatic_or_length, "-1 (automatic) or at least 0 A"),
    "seed": ParameterRange(lambda v: v >= 0, "at least 0"),
}
"""The parameters both front ends have, by the core's names (:mod:`.stages`' parameters;
lengths in Å, fractions of the box where the text says boxes)."""

INPUT_RANGES: Dict[str, ParameterRange] = {
    "pixel_size": ParameterRange(lambda v: v > 0, "positive (A per pixel)"),
    "box_size": ParameterRange(lambda v: v >= MIN_BOX, "at least %d px" % MIN_BOX),
    "voltage": ParameterRange(lambda v: v > 0, "positive (kV)"),
    "cs": ParameterRange(lambda v: v >= 0, "at least 0 mm"),
    "amplitude_contrast": ParameterRange(lambda v: 0 <= v < 1, "in [0, 1)"),
}
"""What the command line takes as flags and Scipion reads from its objects, which carry
their own checks: the micrographs' optics and the box."""


def out_of_range(values: Mapping[str, Optional[float]]) -> List[Tuple[str, float, str]]:
    """(name, value, range text) of each value of ``values`` (core name -> value; None:
    not given, not checked) outside its range, in the order of ``values``: each front end
    words the message, naming the parameter as it shows it."""
    return [(name, value, _range(name).text) for name, value in values.items()
            if value is not None and not _range(name).accepts(value)]


def _range(name: str) -> ParameterRange:
    return RANGES[name] if name in RANGES else INPUT_RANGES[name]
