"""Progressive delivery: shadow, canary and A/B of whole releases, judged by sequential tests.

A rollout compares a candidate release with the baseline (the release ``champion`` points
at) on live traffic. Every worker and server routes its share of events or requests to
the candidate (`RolloutPlan`), records per-arm evidence (`StepEvidence`: counts and
histograms that add up across processes) and writes it to the registry; one of them at a
time holds the rollout's lease and judges the summed evidence with anytime-valid tests, so
looking after every interval never inflates the false-rollback rate above ``alpha``.
"""

from __future__ import annotations

from headrace.rollout.compat import (
    DEFAULT_STEPS,
    SAMPLE_ROWS,
    check_arguments,
    check_compatible,
    plan_rollout,
    score_edges,
)
from headrace.rollout.evidence import LATENCY_EDGES_MS, ArmEvidence, PairEvidence, StepEvidence
from headrace.rollout.follow import ReleaseFollower
from headrace.rollout.judge import Decision, Verdict, judge
from headrace.rollout.metrics import (
    JSD_ALARM,
    MetricResult,
    distribution_alarm,
    evaluate,
    metrics_of,
)
from headrace.rollout.participant import RolloutParticipant, instance_name
from headrace.rollout.plan import STRATEGIES, RolloutPlan, Strategy
from headrace.rollout.routing import BUCKETS, Arm, Routing, bucket_of, candidate_mask
from headrace.rollout.sequential import (
    beta_mixture_log_evalue,
    binned_log_evalue,
    boundary_scale,
    cumulative_quantile_bounds,
    histogram_quantile_bounds,
    jensen_shannon,
    msprt_log_evalue,
    normal_mixture_cs,
    quantile_cs_ranks,
)
from headrace.rollout.state import (
    arm_summary,
    evidence_by_instance,
    latency_quantile_ms,
    plan_of,
    read_evidence,
)

__all__ = [
    "BUCKETS",
    "DEFAULT_STEPS",
    "JSD_ALARM",
    "LATENCY_EDGES_MS",
    "SAMPLE_ROWS",
    "STRATEGIES",
    "Arm",
    "ArmEvidence",
    "Decision",
    "MetricResult",
    "PairEvidence",
    "ReleaseFollower",
    "RolloutParticipant",
    "RolloutPlan",
    "Routing",
    "StepEvidence",
    "Strategy",
    "Verdict",
    "arm_summary",
    "beta_mixture_log_evalue",
    "binned_log_evalue",
    "boundary_scale",
    "bucket_of",
    "candidate_mask",
    "check_arguments",
    "check_compatible",
    "cumulative_quantile_bounds",
    "distribution_alarm",
    "evaluate",
    "evidence_by_instance",
    "histogram_quantile_bounds",
    "instance_name",
    "jensen_shannon",
    "judge",
    "latency_quantile_ms",
    "metrics_of",
    "msprt_log_evalue",
    "normal_mixture_cs",
    "plan_of",
    "plan_rollout",
    "quantile_cs_ranks",
    "read_evidence",
    "score_edges",
]
