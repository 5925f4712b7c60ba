"""``headrace_rollbacks_total``: rollbacks read from the registry's alias history.

A rollback is made by a short-lived command (``headrace rollback``) or by the rollout
engine, whichever process that is; a counter kept in that process would be gone before
Prometheus scraped it. The registry records every rollback as an alias event of kind
``rollback``, durably and for every process alike, so this collector counts those when
Prometheus scrapes a long-lived process (a worker). Every process that exposes it reports
the same value: aggregate with ``max by (model)``. ``increase()`` needs two scrapes, so
rollbacks made before a process started never look new.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from headrace.errors import HeadraceError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from headrace.registry.store import Registry

__all__ = ["ROLLBACK_KIND", "RollbackCollector"]

log = logging.getLogger("headrace.monitoring")

ROLLBACK_KIND = "rollback"
"""The kind of the alias event `Registry.rollback` records."""


class RollbackCollector:
    """Counts each model's rollbacks in the registry at scrape time.

    Parameters
    ----------
    registry
        The registry to read; it must stay open while the collector is registered.
    models
        The release names to report, or a callable giving them at each scrape.

    Notes
    -----
    One small query per model per scrape. A registry that cannot be read leaves its
    models out of that scrape (logged once until it answers again) rather than failing
    the whole exposition.
    """

    def __init__(
        self, registry: Registry, *, models: Iterable[str] | Callable[[], Iterable[str]]
    ) -> None:
        self.registry = registry
        self._models = models if callable(models) else _fixed(list(models))
        self._failing = False

    def counts(self) -> dict[str, int]:
        """Rollbacks per model name, as the registry records them now."""
        counts: dict[str, int] = {}
        for name in sorted(set(self._models())):
            events = self.registry.alias_history(name)
            counts[name] = sum(1 for event in events if event.kind == ROLLBACK_KIND)
        return counts

    def collect(self) -> Iterable[Metric]:
        """The counter family, read from the registry."""
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "headrace_rollbacks",
            "Rollbacks of a model's champion alias recorded in the registry "
            "(headrace rollback, automatic rollout rollbacks).",
            labels=["model"],
        )
        try:
            counts = self.counts()
        except HeadraceError as exc:
            if not self._failing:
                log.warning("rollback counts unavailable: %s", exc)
            self._failing = True
            return [family]
        self._failing = False
        for name, count in counts.items():
            family.add_metric([name], count)
        return [family]

    def describe(self) -> Iterable[Metric]:
        """The family without asking the registry (registration must not do I/O)."""
        from prometheus_client.core import CounterMetricFamily

        return [CounterMetricFamily("headrace_rollbacks", "Rollbacks.", labels=["model"])]


def _fixed(models: list[str]) -> Callable[[], Iterable[str]]:
    return lambda: models
