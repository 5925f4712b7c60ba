"""The demo: the whole headrace story on embedded defaults (``headrace demo``).

It also provides the transaction generator the examples and benchmarks use, the demo's
serving part (the HTTP server beside the stream, `DemoServer`, and the client that asks
it a few Open Inference Protocol questions, `ask_server`), its training (release 1, the
retrain after the drift, the validation gate) and its second act (`RolloutStory`: shadow,
then canary, decided by the running worker), with the rollout's part of the HTML report.
"""

from __future__ import annotations

from headrace.demo.data import (
    DRIFTED_MIX,
    FEATURES,
    MALFORMED_KINDS,
    MERCHANTS,
    SCHEMA_YAML,
    Transactions,
    event_stream,
    generate,
    generate_drifting,
    training_matrix,
)
from headrace.demo.report import add_rollout_section, rollout_section
from headrace.demo.rollout import (
    Phase,
    RolloutReport,
    RolloutStory,
    describe_verdict,
    verdict_record,
)
from headrace.demo.serving import (
    DemoServer,
    ServedAnswer,
    ServingBeside,
    ServingReport,
    ask_server,
    serve_beside_stream,
)
from headrace.demo.story import DemoResult, run_demo
from headrace.demo.training import (
    GateResult,
    Trained,
    best_f1_threshold,
    holdout_metrics,
    register_trained,
    retrain,
    train_first,
    validation_gate,
)

__all__ = [
    "DRIFTED_MIX",
    "FEATURES",
    "MALFORMED_KINDS",
    "MERCHANTS",
    "SCHEMA_YAML",
    "DemoResult",
    "DemoServer",
    "GateResult",
    "Phase",
    "RolloutReport",
    "RolloutStory",
    "ServedAnswer",
    "ServingBeside",
    "ServingReport",
    "Trained",
    "Transactions",
    "add_rollout_section",
    "ask_server",
    "best_f1_threshold",
    "describe_verdict",
    "event_stream",
    "generate",
    "generate_drifting",
    "holdout_metrics",
    "register_trained",
    "retrain",
    "rollout_section",
    "run_demo",
    "serve_beside_stream",
    "train_first",
    "training_matrix",
    "validation_gate",
    "verdict_record",
]
