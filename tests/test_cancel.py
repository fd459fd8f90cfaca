"""Cancel is polled inside every training stage: no later stage starts after it."""

from __future__ import annotations

import pytest

from core.corpus import Cancelled, load_corpus
from core.model import TrainConfig, train
from tests.conftest import SAMPLES

STAGES = ("counting", "prototypes", "index", "windows", "gate", "memory", "signatures")


@pytest.fixture(scope="module")
def docs():
    return load_corpus(SAMPLES / "python_docs.txt")


@pytest.mark.parametrize("stage", STAGES)
def test_cancel_stops_inside_the_stage(docs, stage):
    seen: list[str] = []
    with pytest.raises(Cancelled):
        train(docs, TrainConfig(dim=16, prototypes=16),
              progress=lambda s, f, info=None: seen.append(s),
              cancel=lambda: stage in seen)
    assert stage in seen
    later = STAGES[STAGES.index(stage) + 1:]
    assert not set(seen) & set(later), seen
