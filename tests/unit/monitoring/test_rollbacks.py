"""`RollbackCollector` counts the rollbacks a SQLite registry recorded, whoever made them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from headrace.monitoring.rollbacks import RollbackCollector
from headrace.registry import Registry
from support.models import draft_from, write_sklearn_release


def rollbacks(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        sample.labels["model"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "headrace_rollbacks"
        for sample in family.samples
        if sample.name == "headrace_rollbacks_total"
    }


def open_registry(home: Path) -> Registry:
    return Registry(
        f"sqlite:///{home / 'registry.db'}",
        artifacts=f"file://{home / 'artifacts'}",
        actor="test",
        cache_dir=home / "cache",
    )


def test_counts_rollbacks_made_through_another_registry_handle(tmp_path: Path) -> None:
    files = write_sklearn_release(tmp_path / "model")
    with open_registry(tmp_path) as writer, open_registry(tmp_path) as reader:
        for _ in range(3):
            writer.register(draft_from(files, tmp_path), alias="champion", allow_duplicate=True)
        prometheus = CollectorRegistry()
        prometheus.register(RollbackCollector(reader, models=["fraud", "never-registered"]))
        assert rollbacks(prometheus) == {"fraud": 0, "never-registered": 0}

        writer.rollback("fraud")  # champion 3 -> 2
        writer.set_alias("fraud", "shadow", 1)  # not a rollback
        assert rollbacks(prometheus) == {"fraud": 1, "never-registered": 0}
        writer.rollback("fraud")  # 2 -> 1
        assert rollbacks(prometheus)["fraud"] == 2


def test_models_may_be_read_at_each_scrape(tmp_path: Path) -> None:
    served: list[str] = []
    with open_registry(tmp_path) as registry:
        prometheus = CollectorRegistry()
        prometheus.register(RollbackCollector(registry, models=lambda: served))
        assert rollbacks(prometheus) == {}
        served.append("churn")
        assert rollbacks(prometheus) == {"churn": 0}


def test_an_unreadable_registry_leaves_the_series_out_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "registry.db"
    broken.mkdir()  # a directory where the database file should be: SQLite cannot open it
    registry = Registry(
        f"sqlite:///{broken}",
        artifacts=f"file://{tmp_path / 'artifacts'}",
        actor="test",
        cache_dir=tmp_path / "cache",
    )
    with registry:
        prometheus = CollectorRegistry()
        prometheus.register(RollbackCollector(registry, models=["fraud"]))
        with caplog.at_level(logging.WARNING, logger="headrace.monitoring"):
            assert rollbacks(prometheus) == {}  # the scrape itself still succeeds
            assert rollbacks(prometheus) == {}
    warnings = [r for r in caplog.records if "rollback counts unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert "registry.db" in warnings[0].getMessage() or "Registry" in warnings[0].getMessage()
