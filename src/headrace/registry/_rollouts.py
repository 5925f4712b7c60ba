"""Rollout state: the rollout rows, their lease with fencing, evidence and verdicts.

The registry sits below the rollout part, so it stores a rollout's plan and evidence as
JSON documents it reads only where it must (name, versions, strategy, steps);
`headrace.rollout.state` turns them back into `RolloutPlan` and `StepEvidence`.

One process at a time decides a rollout: it holds the lease (`acquire_lease`, a
conditional UPDATE under the registry's write lock, with an expiry), and every decision
(`decide`) checks in its own transaction that the holder still holds it at the same
epoch. A holder whose lease expired and was taken over has a stale epoch, so its
verdict is refused even when it wakes up late: two processes never both decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from sqlalchemy import Connection, case, func, select
from sqlalchemy.dialects import postgresql, sqlite

from headrace.audit.chain import append_record
from headrace.errors import ConfigError, RolloutError, RolloutLeaseLostError
from headrace.registry._aliases import AliasMoves, check_verified, current_aliases
from headrace.registry._records import get_release, now
from headrace.registry.refs import DEFAULT_ALIAS, ReleaseRef
from headrace.registry.tables import releases, rollout_evidence, rollout_verdicts, rollouts

__all__ = [
    "CONTINUE",
    "CONTINUE_AUDIT_EVERY_S",
    "CONTINUE_STORE_EVERY_S",
    "END_STATES",
    "ROLLOUT_STATES",
    "Decision",
    "EvidenceRow",
    "PlanDocument",
    "RolloutState",
    "VerdictRow",
    "acquire_lease",
    "active",
    "decide",
    "end_manually",
    "evidence_rows",
    "latest",
    "refuse",
    "release_lease",
    "revision",
    "running_row",
    "start",
    "verdicts",
    "verification",
    "write_evidence",
]

ROLLOUT_STATES = ("running", "promoted", "rolled_back", "aborted", "refused")
"""Every state a rollout row may be in; only ``running`` takes traffic."""

END_STATES = ("promoted", "rolled_back", "aborted")
"""The states a decision may end a running rollout in."""

CONTINUE = "continue"
"""The verdict that changes nothing: stored and audited only now and then."""

CONTINUE_STORE_EVERY_S = 30.0
"""A rollout stores at most one ``continue`` verdict row per this many seconds."""

CONTINUE_AUDIT_EVERY_S = 60.0
"""A rollout audits at most one ``continue`` verdict per this many seconds."""


class PlanDocument(Protocol):
    """What the registry reads of a rollout plan (`headrace.rollout.RolloutPlan` is one);
    the whole plan is stored as its JSON encoding."""

    @property
    def name(self) -> str: ...
    @property
    def baseline(self) -> int: ...
    @property
    def candidate(self) -> int: ...
    @property
    def strategy(self) -> str: ...
    @property
    def steps(self) -> tuple[float, ...]: ...


@dataclass(frozen=True, slots=True)
class RolloutState:
    """One rollout as stored.

    Attributes
    ----------
    id
        The rollout's number (unique across names).
    name, baseline, candidate, strategy
        What rolls out: ``name:candidate`` against ``name:baseline``.
    state
        One of `ROLLOUT_STATES`.
    step, weight
        The current step (0-based) and the candidate's traffic weight there (percent).
    plan
        The frozen plan as its JSON document (`headrace.rollout.state.plan_of` decodes it).
    reason
        Why it ended or was refused (empty while running).
    started_at, ended_at
        ISO 8601 UTC; `ended_at` None while running.
    revision
        Changes on every change of any rollout's state or step (poll `rollout_revision`).
    lease_holder, lease_epoch, lease_expires_at
        Who decides, the fencing epoch of its lease, and when the lease lapses (epoch s).
    """

    id: int
    name: str
    baseline: int
    candidate: int
    strategy: str
    state: str
    step: int
    weight: float
    plan: dict[str, Any]
    reason: str
    started_at: str
    ended_at: str | None
    revision: int
    lease_holder: str | None
    lease_epoch: int
    lease_expires_at: float | None

    @property
    def running(self) -> bool:
        """Whether the rollout takes traffic."""
        return self.state == "running"


@dataclass(frozen=True, slots=True)
class VerdictRow:
    """One stored verdict: when (epoch seconds), at which step, what, why, on what evidence
    and by whom."""

    id: int
    rollout_id: int
    at: float
    step: int
    decision: str
    reason: str
    evidence: Any
    holder: str


@dataclass(frozen=True, slots=True)
class EvidenceRow:
    """One instance's cumulative evidence for one step, as its JSON encoding."""

    rollout_id: int
    instance: str
    step: int
    evidence: bytes
    updated_at: float


def _state(row: Any) -> RolloutState:
    plan = msgspec.json.decode(row.plan)
    steps = plan.get("steps") or [0.0]
    return RolloutState(
        id=int(row.id),
        name=row.name,
        baseline=int(row.baseline),
        candidate=int(row.candidate),
        strategy=row.strategy,
        state=row.state,
        step=int(row.step),
        weight=float(steps[min(int(row.step), len(steps) - 1)]),
        plan=plan,
        reason=row.reason,
        started_at=row.started_at,
        ended_at=row.ended_at,
        revision=int(row.revision),
        lease_holder=row.lease_holder,
        lease_epoch=int(row.lease_epoch),
        lease_expires_at=row.lease_expires_at,
    )


def _subject(name: str, rollout_id: int) -> str:
    # "name:..." so `headrace audit log NAME` lists the rollout's records with the name's.
    return f"{name}:rollout/{rollout_id}"


def _next_revision(conn: Connection) -> int:
    # One counter over every rollout, so max(revision) changes on any rollout's change.
    return int(conn.execute(select(func.max(rollouts.c.revision))).scalar() or 0) + 1


def _row(conn: Connection, rollout_id: int) -> Any:
    row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
    if row is None:
        raise RolloutError(f"No rollout with id {rollout_id}: see `headrace rollout status NAME`.")
    return row


def running_row(conn: Connection, name: str) -> Any:
    return conn.execute(
        select(rollouts).where((rollouts.c.name == name) & (rollouts.c.state == "running"))
    ).first()


def verification(conn: Connection, *, name: str, version: int) -> str | None:
    """How a release's registration verified it (``passed``, ``skipped``, ``failed``), or
    None when the registering code did not say (the rollout checks read it first)."""
    state = conn.execute(
        select(releases.c.verification).where(
            (releases.c.name == name) & (releases.c.version == version)
        )
    ).scalar()
    return None if state is None else str(state)


def latest(conn: Connection, name: str) -> RolloutState | None:
    """The newest rollout of `name` (running or not), or None."""
    row = conn.execute(
        select(rollouts).where(rollouts.c.name == name).order_by(rollouts.c.id.desc()).limit(1)
    ).first()
    return None if row is None else _state(row)


def active(conn: Connection) -> list[RolloutState]:
    """Every running rollout, by id."""
    rows = conn.execute(
        select(rollouts).where(rollouts.c.state == "running").order_by(rollouts.c.id)
    )
    return [_state(row) for row in rows]


def revision(conn: Connection) -> int:
    """The highest rollout revision, 0 before the first rollout."""
    return int(conn.execute(select(func.max(rollouts.c.revision))).scalar() or 0)


def _insert(conn: Connection, plan: PlanDocument, *, state: str, reason: str) -> int:
    at = now()
    result = conn.execute(
        rollouts.insert().values(
            name=plan.name,
            baseline=plan.baseline,
            candidate=plan.candidate,
            strategy=plan.strategy,
            state=state,
            step=0,
            plan=msgspec.json.encode(plan).decode(),
            reason=reason,
            started_at=at,
            ended_at=None if state == "running" else at,
            revision=_next_revision(conn),
            lease_holder=None,
            lease_epoch=0,
            lease_expires_at=None,
        )
    )
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - both engines return the new id
        raise RolloutError(f"The registry did not return the new rollout's id for '{plan.name}'.")
    return int(key[0])


def start(
    conn: Connection, plan: PlanDocument, *, actor: str, reason: str, url: str
) -> RolloutState:
    """Store a running rollout of `plan` and audit it; refuse a second running one."""
    running = running_row(conn, plan.name)
    if running is not None:
        raise RolloutError(
            f"Rollout {running.id} of '{plan.name}' (candidate {running.candidate}) is still "
            f"running: end it with `headrace rollout abort {plan.name}` (or promote it) first."
        )
    get_release(conn, ReleaseRef(plan.name, version=plan.baseline), url=url)
    candidate = get_release(conn, ReleaseRef(plan.name, version=plan.candidate), url=url)
    check_verified(conn, candidate, force=False)
    rollout_id = _insert(conn, plan, state="running", reason="")
    append_record(
        conn,
        actor=actor,
        action="rollout.start",
        subject=_subject(plan.name, rollout_id),
        details={"plan": msgspec.to_builtins(plan), "reason": reason},
    )
    return _state(_row(conn, rollout_id))


def refuse(conn: Connection, plan: PlanDocument, *, reason: str, actor: str) -> RolloutState:
    """Store `plan` as a refused rollout (it never runs) and audit why."""
    rollout_id = _insert(conn, plan, state="refused", reason=reason)
    append_record(
        conn,
        actor=actor,
        action="rollout.refuse",
        subject=_subject(plan.name, rollout_id),
        details={"plan": msgspec.to_builtins(plan), "reason": reason},
    )
    return _state(_row(conn, rollout_id))


def acquire_lease(
    conn: Connection, rollout_id: int, *, holder: str, ttl_s: float, at: float
) -> int | None:
    """Take or renew the lease of a running rollout for `ttl_s` seconds from `at`; return
    the epoch held, or None while another holder's lease has not expired.

    Taking over (from nobody or an expired holder) starts a new epoch; renewing keeps it.
    """
    if not (ttl_s > 0 and math.isfinite(ttl_s)):
        raise ConfigError(f"Lease ttl_s must be a positive number of seconds, got {ttl_s!r}.")
    taken = conn.execute(
        rollouts.update()
        .where(
            (rollouts.c.id == rollout_id)
            & (rollouts.c.state == "running")
            & (
                rollouts.c.lease_holder.is_(None)
                | (rollouts.c.lease_expires_at < at)
                | (rollouts.c.lease_holder == holder)
            )
        )
        .values(
            lease_epoch=_epoch_after(holder),
            lease_holder=holder,
            lease_expires_at=at + ttl_s,
        )
    )
    if taken.rowcount != 1:
        return None
    return int(
        conn.execute(select(rollouts.c.lease_epoch).where(rollouts.c.id == rollout_id)).scalar_one()
    )


def _epoch_after(holder: str) -> Any:
    # Evaluated against the row before the update: the same holder keeps its epoch.
    return case(
        (rollouts.c.lease_holder == holder, rollouts.c.lease_epoch),
        else_=rollouts.c.lease_epoch + 1,
    )


def release_lease(conn: Connection, rollout_id: int, *, holder: str, epoch: int) -> bool:
    """Give the lease up (a holder shutting down), if `holder` still holds it at `epoch`."""
    released = conn.execute(
        rollouts.update()
        .where(
            (rollouts.c.id == rollout_id)
            & (rollouts.c.lease_holder == holder)
            & (rollouts.c.lease_epoch == epoch)
        )
        .values(lease_holder=None, lease_expires_at=None)
    )
    return released.rowcount == 1


def write_evidence(
    conn: Connection, rollout_id: int, *, instance: str, step: int, evidence: bytes, at: float
) -> None:
    """Upsert one instance's cumulative evidence for one step (no write lock needed: the
    row is the instance's own)."""
    values = {
        "rollout_id": rollout_id,
        "instance": instance,
        "step": step,
        "evidence": evidence.decode(),
        "updated_at": at,
    }
    keys = ["rollout_id", "instance", "step"]
    changed = {"evidence": values["evidence"], "updated_at": at}
    if conn.dialect.name == "postgresql":
        pg = postgresql.insert(rollout_evidence).values(**values)
        conn.execute(pg.on_conflict_do_update(index_elements=keys, set_=changed))
    else:
        lite = sqlite.insert(rollout_evidence).values(**values)
        conn.execute(lite.on_conflict_do_update(index_elements=keys, set_=changed))


def evidence_rows(conn: Connection, rollout_id: int) -> list[EvidenceRow]:
    """Every instance's evidence rows of a rollout, by step then instance."""
    rows = conn.execute(
        select(rollout_evidence)
        .where(rollout_evidence.c.rollout_id == rollout_id)
        .order_by(rollout_evidence.c.step, rollout_evidence.c.instance)
    )
    return [
        EvidenceRow(
            rollout_id=int(row.rollout_id),
            instance=row.instance,
            step=int(row.step),
            evidence=row.evidence.encode(),
            updated_at=float(row.updated_at),
        )
        for row in rows
    ]


def verdicts(conn: Connection, rollout_id: int) -> list[VerdictRow]:
    """The stored verdicts of a rollout, oldest first."""
    rows = conn.execute(
        select(rollout_verdicts)
        .where(rollout_verdicts.c.rollout_id == rollout_id)
        .order_by(rollout_verdicts.c.id)
    )
    return [
        VerdictRow(
            id=int(row.id),
            rollout_id=int(row.rollout_id),
            at=float(row.at),
            step=int(row.step),
            decision=row.decision,
            reason=row.reason,
            evidence=msgspec.json.decode(row.evidence),
            holder=row.holder,
        )
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class Decision:
    """What a verdict does to its rollout (see `decide`)."""

    decision: str
    reason: str
    evidence: Any
    next_step: int | None = None
    end_state: str | None = None
    move_champion_to: int | None = None
    judged_step: int | None = None


def decide(
    conn: Connection,
    rollout_id: int,
    *,
    holder: str,
    epoch: int,
    verdict: Decision,
    at: float,
    moves: AliasMoves,
) -> RolloutState:
    """Apply one verdict of the lease holder, fenced by its epoch, in the caller's write
    transaction: store (``continue`` throttled) and audit it, move the step or end the
    rollout, and on an end move ``champion`` (promoted: to the candidate; rolled back: to
    the baseline, where it normally still is)."""
    row = _row(conn, rollout_id)
    if row.state != "running" or row.lease_holder != holder or int(row.lease_epoch) != epoch:
        raise RolloutLeaseLostError(
            f"'{holder}' no longer holds the lease of rollout {rollout_id} of '{row.name}' at "
            f"epoch {epoch} (state {row.state}, holder {row.lease_holder or '-'}, epoch "
            f"{row.lease_epoch}): stop deciding it and acquire the lease again."
        )
    if verdict.judged_step is not None and verdict.judged_step != row.step:
        raise RolloutLeaseLostError(
            f"'{holder}' judged step {verdict.judged_step} of rollout {rollout_id} of "
            f"'{row.name}', which is at step {row.step} now (another holder moved it before "
            "this one took the lease): read the rollout again and judge its current step."
        )
    steps = len(msgspec.json.decode(row.plan).get("steps") or [0])
    if verdict.end_state is not None and verdict.end_state not in END_STATES:
        raise ConfigError(
            f"Invalid end state {verdict.end_state!r} for rollout {rollout_id}: use one of "
            f"{', '.join(END_STATES)}, or None to keep it running."
        )
    if verdict.next_step is not None and not 0 <= verdict.next_step < steps:
        raise ConfigError(
            f"Step {verdict.next_step} is outside rollout {rollout_id}'s steps 0..{steps - 1}."
        )
    changes = verdict.end_state is not None or (
        verdict.next_step is not None and verdict.next_step != row.step
    )
    quiet = verdict.decision == CONTINUE and not changes
    store = not quiet or _due(row.continue_stored_at, at, CONTINUE_STORE_EVERY_S)
    audit = not quiet or _due(row.continue_audited_at, at, CONTINUE_AUDIT_EVERY_S)
    evidence = _builtins(verdict.evidence)
    if store:
        conn.execute(
            rollout_verdicts.insert().values(
                rollout_id=rollout_id,
                at=at,
                step=row.step,
                decision=verdict.decision,
                reason=verdict.reason,
                evidence=msgspec.json.encode(evidence).decode(),
                holder=holder,
            )
        )
    values: dict[str, Any] = {}
    if quiet and store:
        values["continue_stored_at"] = at
    if quiet and audit:
        values["continue_audited_at"] = at
    if changes:
        values["revision"] = _next_revision(conn)
        if verdict.next_step is not None:
            values["step"] = verdict.next_step
        if verdict.end_state is not None:
            values.update(state=verdict.end_state, ended_at=now(), reason=verdict.reason)
    target = verdict.move_champion_to
    if target is None and verdict.end_state == "promoted":
        target = int(row.candidate)
    elif target is None and verdict.end_state == "rolled_back":
        target = int(row.baseline)
    if target is not None and verdict.end_state is not None:
        _move_champion(conn, row, target, reason=verdict.reason, moves=moves)
    if audit:
        append_record(
            conn,
            actor=moves.actor,
            action="rollout.verdict",
            subject=_subject(row.name, rollout_id),
            details={
                "decision": verdict.decision,
                "reason": verdict.reason,
                "step": int(row.step),
                "next_step": verdict.next_step,
                "state": verdict.end_state or "running",
                "holder": holder,
                "epoch": epoch,
                "evidence": evidence,
            },
        )
    if values:
        conn.execute(rollouts.update().where(rollouts.c.id == rollout_id).values(**values))
    return _state(_row(conn, rollout_id))


def _builtins(value: Any) -> Any:
    """`value` as JSON builtins; numpy scalars and arrays (a judge's statistics) included."""
    return msgspec.to_builtins(value, enc_hook=_numpy_hook)


def _numpy_hook(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, without numpy here
    if callable(tolist):
        return tolist()
    raise TypeError(f"Verdict evidence holds a {type(value).__name__}, which is not JSON-able.")


def _due(last: float | None, at: float, every_s: float) -> bool:
    return last is None or at - float(last) >= every_s


def _move_champion(
    conn: Connection, row: Any, target: int, *, reason: str, moves: AliasMoves
) -> None:
    if current_aliases(conn, row.name).get(DEFAULT_ALIAS) == target:
        return
    moves.move(
        conn,
        name=row.name,
        alias=DEFAULT_ALIAS,
        version=target,
        reason=f"rollout {row.id}: {reason}" if reason else f"rollout {row.id}",
        kind="rollout",
    )


def end_manually(
    conn: Connection,
    name: str,
    *,
    state: str,
    reason: str,
    at: float,
    moves: AliasMoves,
    url: str,
) -> RolloutState:
    """End `name`'s running rollout by hand (``promoted`` or ``aborted``) whoever holds
    its lease; a promotion moves ``champion`` to the candidate. Audited."""
    row = running_row(conn, name)
    if row is None:
        raise RolloutError(
            f"No running rollout of '{name}': see `headrace rollout status {name}`, or start "
            f"one with `headrace rollout start {name} --candidate V --strategy canary`."
        )
    decision = "promote" if state == "promoted" else "abort"
    if state == "promoted":
        candidate = get_release(conn, ReleaseRef(name, version=int(row.candidate)), url=url)
        check_verified(conn, candidate, force=False)
        _move_champion(conn, row, int(row.candidate), reason=reason or decision, moves=moves)
    holder = f"manual:{moves.actor}"
    conn.execute(
        rollout_verdicts.insert().values(
            rollout_id=row.id,
            at=at,
            step=row.step,
            decision=decision,
            reason=reason,
            evidence="{}",
            holder=holder,
        )
    )
    conn.execute(
        rollouts.update()
        .where(rollouts.c.id == row.id)
        .values(
            state=state,
            ended_at=now(),
            reason=reason,
            revision=_next_revision(conn),
            lease_holder=None,
            lease_expires_at=None,
        )
    )
    append_record(
        conn,
        actor=moves.actor,
        action=f"rollout.{decision}",
        subject=_subject(name, int(row.id)),
        details={"step": int(row.step), "reason": reason, "candidate": int(row.candidate)},
    )
    return _state(_row(conn, int(row.id)))
