"""The route stage: split a batch's fresh events between the baseline and a candidate.

Outside a rollout the whole batch is one part for the baseline. During a rollout each
event's key (`RolloutPlan.key_field`, else the event id) picks its arm (`Routing.assign`):

- canary and ab: the candidate scores its events, the baseline the others;
- shadow: the baseline scores every event and the candidate also scores its share, its
  outputs kept apart (the shadow sink) and never sent on.

Model latency is only comparable between calls of the same size (a call's fixed cost
dominates small batches, so a 5% arm's per-row time would look slow for nothing). So when
both arms score, each has one *timed* part of the same number of rows: the larger arm's
events are split into a part as large as the smaller arm's and the rest. In shadow the
timed parts hold the very same events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from headrace.inference.service import InferenceService
from headrace.pipeline.decode import DecodedEvents, subset_events
from headrace.rollout.routing import Arm, Routing

__all__ = ["Part", "route"]


@dataclass(frozen=True, slots=True)
class Part:
    """Some of a batch's fresh events and the release that scores them.

    Attributes
    ----------
    service
        The release's inference core.
    events
        The events (the first part also carries the batch's decode failures).
    arm
        Which arm of the rollout, or None outside a rollout.
    timed
        Whether the part's model latency is evidence (a matched-size call).
    shadow
        The candidate's copy of events the baseline also scores: its outputs go to the
        shadow sink, its failures to the evidence only.
    """

    service: InferenceService
    events: DecodedEvents
    arm: Arm | None = None
    timed: bool = False
    shadow: bool = False


def route(
    routing: Routing, fresh: DecodedEvents, *, keys: Sequence[str], timed: bool = True
) -> list[Part]:
    """The parts to score `fresh` with, baseline parts first (`keys`: one per event).

    `timed` False skips the matched-size split of a canary's larger arm (one call per arm:
    the split's extra model call is most of what a canary costs a worker, so the worker
    times only some of its batches)."""
    baseline = routing.baseline
    candidate = routing.candidate
    if candidate is None or not fresh.candidates:
        return [Part(baseline, fresh)]
    mask = routing.assign(keys)
    chosen = np.flatnonzero(mask).tolist()
    others = np.flatnonzero(~mask).tolist()
    if routing.shadow:
        return _shadow(baseline, candidate, fresh, chosen=chosen, others=others)
    base_rows, cand_rows = others, chosen
    k = min(len(base_rows), len(cand_rows)) if timed else 0
    parts: list[Part] = []
    arms: tuple[tuple[Arm, InferenceService, list[int]], ...] = (
        ("baseline", baseline, base_rows),
        ("candidate", candidate, cand_rows),
    )
    for arm, service, rows in arms:
        if not rows:
            continue
        chunks = [rows[:k], rows[k:]] if k and len(rows) > k else [rows]
        for j, chunk in enumerate(chunks):
            if chunk:
                parts.append(
                    Part(service, _take(fresh, chunk, first=not parts), arm, k > 0 and j == 0)
                )
    return parts


def _shadow(
    baseline: InferenceService,
    candidate: InferenceService,
    fresh: DecodedEvents,
    *,
    chosen: list[int],
    others: list[int],
) -> list[Part]:
    if not chosen:
        return [Part(baseline, fresh, "baseline")]
    parts = [Part(baseline, _take(fresh, chosen, first=True), "baseline", timed=True)]
    if others:
        parts.append(Part(baseline, _take(fresh, others, first=False), "baseline"))
    parts.append(
        Part(candidate, _take(fresh, chosen, first=False), "candidate", timed=True, shadow=True)
    )
    return parts


def _take(fresh: DecodedEvents, rows: list[int], *, first: bool) -> DecodedEvents:
    """`rows` of `fresh`; the first part keeps the batch's failures, the others start
    their own list (so a failure is a dead letter once)."""
    if first and len(rows) == len(fresh.candidates):
        return fresh
    return subset_events(fresh, rows, failures=None if first else [])
