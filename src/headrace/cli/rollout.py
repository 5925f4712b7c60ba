"""``headrace rollout start|status|promote|abort``.

`start` checks the candidate and stores the plan, then returns: the running workers and
servers route, gather evidence and decide from there. A refused candidate is recorded
(state ``refused``, with the reason) and never receives an event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from headrace.cli.context import open_registry
from headrace.cli.output import print_aligned, print_json, print_table

if TYPE_CHECKING:
    from headrace.registry import Registry, RolloutState

__all__ = ["abort", "app", "promote", "start", "status"]

app = typer.Typer(
    help="Shadow, canary and A/B rollouts of a candidate release.", no_args_is_help=True
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class StrategyName(StrEnum):
    """The strategies `--strategy` accepts."""

    shadow = "shadow"
    canary = "canary"
    ab = "ab"


def _steps(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a list of weights: use percents separated by commas, "
            "e.g. 5,25,50,100."
        ) from None


@app.command("start")
def start(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Release name.")],
    candidate: Annotated[int, typer.Option(help="Version to roll out.", min=1)],
    strategy: Annotated[StrategyName, typer.Option(help="shadow, canary or ab.")],
    steps: Annotated[
        str | None,
        typer.Option(
            help="Candidate weights in percent, ascending [canary 5,25,50,100; ab 50; shadow 100].",
            callback=_steps,
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option(help="False-rollback probability over the whole rollout.")
    ] = 0.05,
    min_samples: Annotated[
        int, typer.Option(help="Events per arm before any decision of a step.", min=1)
    ] = 1000,
    key_field: Annotated[
        str | None,
        typer.Option(help="Event field that assigns arms (sticky) [the pipeline's id field]."),
    ] = None,
    max_samples: Annotated[
        int | None,
        typer.Option(
            help="Events per arm at which a step that showed no harm advances [50000].", min=1
        ),
    ] = None,
    error_tolerance: Annotated[
        float | None,
        typer.Option(help="Tolerated increase of the error rate, absolute [0.001]."),
    ] = None,
    latency_tolerance: Annotated[
        float | None,
        typer.Option(help="Tolerated relative increase of latency at p50; p99 twice it [0.05]."),
    ] = None,
    score_tolerance: Annotated[
        float | None, typer.Option(help="Tolerated change of the mean score, absolute [0.01].")
    ] = None,
    disagreement_tolerance: Annotated[
        float | None,
        typer.Option(help="Tolerated share of shadowed pairs that disagree [0.01]."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check NAME:CANDIDATE against NAME@champion, store the rollout and return at once."""
    from headrace.errors import RolloutRefusedError
    from headrace.rollout.compat import plan_rollout
    from headrace.rollout.plan import RolloutPlan

    chosen: Any = steps  # typer passes what the callback returned
    with open_registry(ctx, must_exist=True) as registry:
        try:
            plan = plan_rollout(
                registry,
                name,
                candidate,
                strategy=strategy.value,
                steps=chosen,
                alpha=alpha,
                min_samples=min_samples,
                key_field=key_field,
                max_samples=max_samples,
                tolerances={
                    name: value
                    for name, value in (
                        ("error", error_tolerance),
                        ("latency", latency_tolerance),
                        ("score", score_tolerance),
                        ("disagreement", disagreement_tolerance),
                    )
                    if value is not None
                },
            )
        except RolloutRefusedError as exc:
            if not isinstance(exc.plan, RolloutPlan):
                raise
            registry.refuse_rollout(exc.plan, exc.reason)
            raise RolloutRefusedError(
                f"Rollout of {name}:{candidate} refused (recorded): {exc.reason}", plan=exc.plan
            ) from exc
        state = registry.start_rollout(plan)
    if as_json:
        print_json(_document(state, registry=None))
        return
    steps_text = ",".join(f"{w:g}" for w in plan.steps)
    typer.echo(
        f"{name}: rollout {state.id} started: candidate {plan.candidate} against baseline "
        f"{plan.baseline} ({plan.strategy}, steps {steps_text}, alpha {plan.alpha:g}, "
        f"min samples {plan.min_samples}, key {plan.key_field or 'id field'})"
    )
    typer.echo(f"score bins: {len(plan.score_edges) + 1 if plan.score_edges else 0}")
    typer.echo(f"follow it with: headrace rollout status {name}")


@app.command("status")
def status(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Release name.")],
    as_json: JsonFlag = False,
) -> None:
    """The newest rollout of NAME: state, arms (events, errors, latency, scores), verdicts."""
    from headrace.errors import RolloutError

    with open_registry(ctx, must_exist=True) as registry:
        state = registry.rollout(name)
        if state is None:
            raise RolloutError(
                f"'{name}' has no rollout: start one with `headrace rollout start {name} "
                "--candidate V --strategy canary`."
            )
        document = _document(state, registry=registry)
    if as_json:
        print_json(document)
        return
    print_aligned(
        ["field", "value"],
        [
            ("rollout", state.id),
            ("state", state.state),
            ("strategy", state.strategy),
            ("baseline", f"{name}:{state.baseline}"),
            ("candidate", f"{name}:{state.candidate}"),
            ("step", f"{state.step + 1} of {len(state.plan.get('steps') or [0])}"),
            ("weight", f"{state.weight:g}%"),
            ("started", state.started_at[:19]),
            ("ended", (state.ended_at or "")[:19] or None),
            ("reason", state.reason or None),
            ("decider", state.lease_holder),
        ],
    )
    arms = document["arms"]
    typer.echo("")
    print_table(
        f"{name} arms (step {state.step + 1})",
        ["arm", "events", "errors", "p50 ms", "p99 ms", "scored", "mean score", "sd"],
        [
            (
                arm,
                values["events"],
                values["errors"],
                values["latency_p50_ms"],
                values["latency_p99_ms"],
                values["scored"],
                values["mean_score"],
                values["score_sd"],
            )
            for arm, values in arms.items()
        ],
    )
    typer.echo("")
    print_table(
        f"{name} verdicts",
        ["at", "step", "decision", "reason", "evidence"],
        [
            (v["at_iso"][:19], v["step"] + 1, v["decision"], v["reason"], v["evidence"])
            for v in document["verdicts"]
        ],
    )


@app.command("promote")
def promote(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Release name.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
) -> None:
    """End NAME's running rollout now and move NAME@champion to its candidate."""
    with open_registry(ctx, must_exist=True) as registry:
        state = registry.promote_rollout(name, reason=reason)
    typer.echo(f"{name}: rollout {state.id} promoted; champion -> {state.candidate}")


@app.command("abort")
def abort(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Release name.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
) -> None:
    """End NAME's running rollout now; NAME@champion stays where it is."""
    with open_registry(ctx, must_exist=True) as registry:
        state = registry.abort_rollout(name, reason=reason)
    typer.echo(f"{name}: rollout {state.id} aborted; champion stays at {state.baseline}")


def _document(state: RolloutState, *, registry: Registry | None) -> dict[str, Any]:
    """The status as JSON: the rollout, per-arm summaries of the current step, every
    stored verdict, and a columnar history (plot-friendly: one array per column)."""
    from headrace.rollout.evidence import ArmEvidence
    from headrace.rollout.state import arm_summary, read_evidence

    evidence = read_evidence(registry, state.id) if registry is not None else []
    steps = [
        {
            "step": index,
            "arms": {
                "baseline": arm_summary(step.baseline),
                "candidate": arm_summary(step.candidate),
            },
            "pairs": {"pairs": step.pairs.pairs, "disagreements": step.pairs.disagreements},
        }
        for index, step in enumerate(evidence)
    ]
    current = next((s for s in steps if s["step"] == state.step), None)
    empty = arm_summary(ArmEvidence())
    verdicts = registry.verdicts(state.id) if registry is not None else []
    weights = state.plan.get("steps") or [0.0]
    rows = [
        {
            "at": v.at,
            "at_iso": datetime.fromtimestamp(v.at, UTC).isoformat(timespec="seconds"),
            "step": v.step,
            "weight": weights[min(v.step, len(weights) - 1)],
            "decision": v.decision,
            "reason": v.reason,
            "evidence": v.evidence,
            "holder": v.holder,
        }
        for v in verdicts
    ]
    return {
        "id": state.id,
        "name": state.name,
        "state": state.state,
        "strategy": state.strategy,
        "baseline": state.baseline,
        "candidate": state.candidate,
        "step": state.step,
        "weight": state.weight,
        "reason": state.reason,
        "started_at": state.started_at,
        "ended_at": state.ended_at,
        "revision": state.revision,
        "lease": {
            "holder": state.lease_holder,
            "epoch": state.lease_epoch,
            "expires_at": state.lease_expires_at,
        },
        "plan": state.plan,
        "arms": current["arms"] if current else {"baseline": empty, "candidate": empty},
        "pairs": current["pairs"] if current else {"pairs": 0, "disagreements": 0},
        "steps": steps,
        "verdicts": rows,
        "history": {
            column: [row[column] for row in rows] for column in ("at", "step", "weight", "decision")
        },
    }
