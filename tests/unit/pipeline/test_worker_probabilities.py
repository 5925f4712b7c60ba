"""Per-class probabilities in stream outputs: off by default, `probabilities: true` on."""

from __future__ import annotations

import msgspec
import pytest

from headrace.pipeline.spec import pipeline_spec_from_dict
from unit.pipeline.test_worker import Rig, event


def test_outputs_carry_every_class_probability_only_when_asked() -> None:
    plain = Rig()
    plain.produce([event(i) for i in range(20)])
    plain.worker().run(max_events=20)
    assert all("probabilities" not in o for o in plain.outputs())

    asked = Rig()
    asked.spec = msgspec.structs.replace(asked.spec, probabilities=True)
    asked.produce([event(i, amount=float(i * 40)) for i in range(20)])
    asked.worker().run(max_events=20)
    outputs = asked.outputs()
    assert len(outputs) == 20
    for o in outputs:
        assert set(o["probabilities"]) == {"legit", "fraud"}  # named by the config's labels
        assert o["probabilities"]["fraud"] == pytest.approx(o["score"])
        assert sum(o["probabilities"].values()) == pytest.approx(1.0)
        amount = int(o["event_id"][1:]) * 40.0
        assert o["probabilities"]["fraud"] == pytest.approx(amount / 1000.0)


def test_the_option_is_a_boolean_in_the_spec() -> None:
    base = {
        "name": "p",
        "model": "fraud:1",
        "source": {"url": "memory://x/events"},
        "outputs": [{"url": "memory://x/out"}],
    }
    assert pipeline_spec_from_dict(base).probabilities is False
    assert pipeline_spec_from_dict({**base, "probabilities": True}).probabilities is True
