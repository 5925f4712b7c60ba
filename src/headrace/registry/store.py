"""The registry: releases, versions, aliases with their history, and the audit chain.

One class over SQLite (default) and PostgreSQL. Every mutation runs in one transaction
under a single write lock (SQLite ``BEGIN IMMEDIATE``; a PostgreSQL advisory lock), and
appends its audit record inside that transaction: a crash leaves all of it or none.
Artifacts are uploaded before the transaction, content-addressed, so a crash there leaves
only unreferenced blobs.

`Registry` is a facade: it owns the transactions and registration, and delegates each
other concern to its module: reading releases (`_records`), aliases, their history and
rollback (`_aliases`), tags (`_tags`), rollout state, leases, evidence and verdicts
(`_rollouts`), verified copies of files (`_copies`), the chain
check (`integrity`) and transactions with their write lock (`_engine`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Connection

from headrace._redact import redact_url
from headrace.audit.chain import GENESIS_HASH, AuditRecord, append_record, iter_records
from headrace.audit.checkpoint import Checkpoint, make_checkpoint
from headrace.audit.keys import Signer, Verifier
from headrace.errors import AuditError, ReleaseError
from headrace.registry import _aliases, _copies, _rollouts, _tags
from headrace.registry._aliases import (
    ALIAS_CHANNEL,
    AliasEvent,
    AliasMoves,
    check_alias,
    check_verified,
)

# `_COPIES` stays importable here: tests drop this process's copies to act as a new one.
from headrace.registry._copies import COPIES as _COPIES  # noqa: F401
from headrace.registry._copies import materialize
from headrace.registry._engine import Database
from headrace.registry._records import (
    VERIFICATIONS,
    Release,
    ReleaseSummary,
    check_verification,
    count_releases,
    first_with_content,
    get_release,
    insert_release,
    list_summaries,
    next_version,
    now,
    resolve_parent,
)
from headrace.registry._rollouts import (
    EvidenceRow,
    PlanDocument,
    RolloutState,
    VerdictRow,
)
from headrace.registry.anchors import CheckpointStore
from headrace.registry.artifacts import ArtifactStore, open_artifact_store
from headrace.registry.integrity import ChainState, verify_against_checkpoint, verify_registry
from headrace.registry.refs import DEFAULT_ALIAS, ReleaseRef, parse_ref
from headrace.registry.signing import SigningPolicy, check_signed
from headrace.release.bundle import ReleaseDraft, file_sha256, validate_name
from headrace.release.identity import content_digest
from headrace.release.manifest import manifest_digest

__all__ = [
    "ALIAS_CHANNEL",
    "VERIFICATIONS",
    "AliasEvent",
    "EvidenceRow",
    "Registry",
    "Release",
    "ReleaseSummary",
    "RolloutState",
    "VerdictRow",
]


class Registry:
    """Names, versions, aliases and lineage of releases, plus their files.

    Parameters
    ----------
    url
        ``sqlite:///path.db`` or ``postgresql://user@host:port/db``.
    artifacts
        An `ArtifactStore` or its URL.
    actor
        Who mutations are attributed to.
    cache_dir
        Where `fetch` keeps verified copies of release files.
    signing
        Whether `fetch` refuses releases no trusted key signed (default: it does not).
    """

    def __init__(
        self,
        url: str,
        *,
        artifacts: ArtifactStore | str,
        actor: str,
        cache_dir: Path,
        signing: SigningPolicy | None = None,
    ) -> None:
        self.url = url
        self.signing = signing or SigningPolicy()
        self.actor = actor
        self.cache_dir = cache_dir
        self.artifacts = open_artifact_store(artifacts) if isinstance(artifacts, str) else artifacts
        self._db = Database(url)

    # -- plumbing ---------------------------------------------------------------------

    def close(self) -> None:
        """Release database connections."""
        self._db.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> int:
        """Connect, migrate if needed, and return the number of releases (for doctor)."""
        with self._db.transaction(write=False) as conn:
            return count_releases(conn)

    # -- releases ---------------------------------------------------------------------

    def register(
        self,
        draft: ReleaseDraft,
        *,
        alias: str | None = None,
        parent: str | None = None,
        reason: str = "registered",
        allow_duplicate: bool = False,
        verification: str | None = None,
        sign_key: Any = None,
    ) -> Release:
        """Upload the draft's files, then record the release atomically.

        Parameters
        ----------
        alias
            Point this alias at the new release in the same transaction.
        parent
            The release this one derives from (``name:version`` or ``name@alias``);
            defaults to the name's current champion, if any.
        allow_duplicate
            Make a new version even when the name already has a release of identical
            content; otherwise that release is returned (``duplicate_of`` set) and
            nothing new is written (an `alias` still moves to it).
        verification
            ``passed``, ``skipped`` or ``failed``: whether the model scored its own
            reference sample before registration; an alias refuses a release that did
            not pass (see `set_alias`). None when the caller did not check.
        sign_key
            An Ed25519 private key (``cryptography``) to sign the release digest with.
        """
        validate_name(draft.name)
        if alias is not None:
            check_alias(alias)
        check_verification(verification)
        for digest, source in draft.sources.items():
            if file_sha256(source) != digest:
                raise ReleaseError(f"File '{source}' changed after it was hashed; register again.")
            self.artifacts.put_file(source, digest)
        with self._db.transaction(write=True) as conn:
            parent_release = resolve_parent(conn, name=draft.name, parent=parent, url=self.url)
            version = next_version(conn, draft.name)
            manifest = draft.manifest(
                version=version,
                created_at=now(),
                created_by=self.actor,
                parent=parent_release.ref if parent_release else None,
                parent_digest=parent_release.digest if parent_release else None,
            )
            content = content_digest(manifest)
            if not allow_duplicate:
                same = first_with_content(conn, name=draft.name, content=content)
                if same is not None:
                    existing = get_release(
                        conn, ReleaseRef(draft.name, version=int(same)), url=self.url
                    )
                    if alias is not None:
                        check_verified(conn, existing, force=False)
                        self._moves.move(
                            conn,
                            name=draft.name,
                            alias=alias,
                            version=existing.version,
                            reason=reason,
                        )
                    return Release(
                        manifest=existing.manifest,
                        digest=existing.digest,
                        duplicate_of=existing.ref,
                    )
            digest = manifest_digest(manifest)
            details = insert_release(
                conn,
                manifest,
                digest=digest,
                content=content,
                verification=verification,
                actor=self.actor,
                sign_key=sign_key,
            )
            append_record(
                conn, actor=self.actor, action="register", subject=manifest.ref, details=details
            )
            release = Release(manifest=manifest, digest=digest)
            if alias is not None:
                check_verified(conn, release, force=False)
                self._moves.move(conn, name=draft.name, alias=alias, version=version, reason=reason)
        return release

    def get(self, ref: str | ReleaseRef) -> Release:
        """The release a reference names, its manifest checked against its digest."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        with self._db.transaction(write=False) as conn:
            return get_release(conn, parsed, url=self.url)

    def list_releases(self, name: str | None = None) -> list[ReleaseSummary]:
        """Releases (of one name, or all) in name and version order, with their aliases."""
        with self._db.transaction(write=False) as conn:
            return list_summaries(conn, name)

    # -- aliases ----------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, int]:
        """Current alias -> version for a name."""
        with self._db.transaction(write=False) as conn:
            return _aliases.current_aliases(conn, name)

    def alias_revision(self) -> int:
        """A number that changes whenever any alias moves (cheap enough to poll each second).

        It is the id of the latest alias event, 0 before the first.
        """
        with self._db.transaction(write=False) as conn:
            return _aliases.alias_revision(conn)

    def alias_targets(self, alias: str = DEFAULT_ALIAS) -> dict[str, int]:
        """Name -> version for every name that has `alias`."""
        with self._db.transaction(write=False) as conn:
            return _aliases.alias_targets(conn, alias)

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every move of a name's aliases (or one alias), oldest first."""
        with self._db.transaction(write=False) as conn:
            return _aliases.history(conn, name, alias)

    def set_alias(
        self, name: str, alias: str, version: int, *, reason: str = "", force: bool = False
    ) -> AliasEvent:
        """Point `alias` at `name:version` (which must exist).

        A release that did not pass verification at registration is refused unless
        `force` is set with a `reason`; the forced move is audited as such.
        """
        check_alias(alias)
        _aliases.check_forced(name=name, alias=alias, version=version, force=force, reason=reason)
        with self._db.transaction(write=True) as conn:
            release = get_release(conn, ReleaseRef(name, version=version), url=self.url)
            forced = check_verified(conn, release, force=force)
            event = self._moves.move(
                conn, name=name, alias=alias, version=version, reason=reason, forced=forced
            )
            if alias == DEFAULT_ALIAS:
                self._abort_for_hand_move(conn, name, version)
            return event

    def rollback(self, name: str, *, to: int | None = None, reason: str = "") -> AliasEvent:
        """Move `champion` back to its previous target, or to version `to`."""
        with self._db.transaction(write=True) as conn:
            target = _aliases.rollback_target(conn, name=name, to=to, url=self.url)
            event = self._moves.move(
                conn,
                name=name,
                alias=DEFAULT_ALIAS,
                version=target,
                kind="rollback",
                reason=reason or "rollback",
            )
            self._abort_for_hand_move(conn, name, target)
            return event

    def _abort_for_hand_move(self, conn: Connection, name: str, version: int) -> None:
        """A hand move of ``champion`` ends `name`'s running rollout (aborted, audited):
        its baseline is no longer what serves, and its lease holder must not promote
        over the move later."""
        if _rollouts.running_row(conn, name) is None:
            return
        self._end_by_hand(conn, name, "aborted", f"champion moved by hand to {name}:{version}")

    @property
    def _moves(self) -> AliasMoves:
        return AliasMoves(actor=self.actor, notify=self._db.postgres)

    # -- tags -------------------------------------------------------------------------

    def tag_release(self, ref: str | ReleaseRef, tag: str, value: str) -> Release:
        """Set `tag` on the release `ref` names to `value` (a drift monitor sets
        ``drift``), audited as ``release.tag`` in the same transaction."""
        _tags.check_tag(tag)
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        with self._db.transaction(write=True) as conn:
            release = get_release(conn, parsed, url=self.url)
            _tags.set_tag(conn, release, tag=tag, value=value, actor=self.actor)
        return release

    def release_tags(self, ref: str | ReleaseRef) -> dict[str, str]:
        """Tag -> value of the release `ref` names."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        with self._db.transaction(write=False) as conn:
            return _tags.read_tags(conn, get_release(conn, parsed, url=self.url))

    # -- rollouts ---------------------------------------------------------------------

    def verification(self, name: str, version: int) -> str | None:
        """How registration verified ``name:version`` (``passed``, ``skipped``,
        ``failed``), or None when the registering code did not check."""
        with self._db.transaction(write=False) as conn:
            get_release(conn, ReleaseRef(name, version=version), url=self.url)
            return _rollouts.verification(conn, name=name, version=version)

    def start_rollout(self, plan: PlanDocument, *, reason: str = "") -> RolloutState:
        """Store a running rollout of `plan` (a `headrace.rollout.RolloutPlan`), audited as
        ``rollout.start``. Both versions must exist and the candidate must have passed
        verification; a second running rollout of the name is refused (`RolloutError`)."""
        with self._db.transaction(write=True) as conn:
            return _rollouts.start(conn, plan, actor=self.actor, reason=reason, url=self.url)

    def refuse_rollout(self, plan: PlanDocument, reason: str) -> RolloutState:
        """Record `plan` as refused before any traffic (state ``refused``), audited with
        `reason`, so ``rollout status`` says why it never ran."""
        with self._db.transaction(write=True) as conn:
            return _rollouts.refuse(conn, plan, reason=reason, actor=self.actor)

    def rollout(self, name: str) -> RolloutState | None:
        """The newest rollout of `name` (running or ended), or None."""
        with self._db.transaction(write=False) as conn:
            return _rollouts.latest(conn, name)

    def active_rollouts(self) -> list[RolloutState]:
        """Every running rollout, oldest first."""
        with self._db.transaction(write=False) as conn:
            return _rollouts.active(conn)

    def rollout_revision(self) -> int:
        """A number that grows whenever any rollout starts, steps or ends (cheap enough to
        poll each second, like `alias_revision`)."""
        with self._db.transaction(write=False) as conn:
            return _rollouts.revision(conn)

    def write_evidence(
        self, rollout_id: int, *, instance: str, step: int, evidence: Any, at: float | None = None
    ) -> None:
        """Upsert `instance`'s cumulative evidence (a `StepEvidence`) for `step`; each
        worker or server (``host:pid:random``) owns its rows, so writes never conflict."""
        stamp = time.time() if at is None else at
        data = msgspec.json.encode(evidence)
        with self._db.transaction(write=False) as conn:
            _rollouts.write_evidence(
                conn, rollout_id, instance=instance, step=step, evidence=data, at=stamp
            )

    def evidence_rows(self, rollout_id: int) -> list[EvidenceRow]:
        """Every instance's evidence of a rollout as JSON (`headrace.rollout.state`
        decodes and sums them per step)."""
        with self._db.transaction(write=False) as conn:
            return _rollouts.evidence_rows(conn, rollout_id)

    def acquire_lease(
        self, rollout_id: int, *, holder: str, ttl_s: float, at: float | None = None
    ) -> int | None:
        """Take or renew the right to decide a running rollout for `ttl_s` seconds.

        Returns the lease's fencing epoch (pass it to `decide`), or None while another
        holder's lease is unexpired. Taking over starts a new epoch, so the previous
        holder's `decide` is refused from then on. `at` (epoch seconds) defaults to now.
        """
        stamp = time.time() if at is None else at
        with self._db.transaction(write=True) as conn:
            return _rollouts.acquire_lease(conn, rollout_id, holder=holder, ttl_s=ttl_s, at=stamp)

    def release_lease(self, rollout_id: int, *, holder: str, epoch: int) -> bool:
        """Give up the lease (a holder shutting down) so the next one need not wait for it to
        expire; False when `holder` no longer held it at `epoch`."""
        with self._db.transaction(write=True) as conn:
            return _rollouts.release_lease(conn, rollout_id, holder=holder, epoch=epoch)

    def decide(
        self,
        rollout_id: int,
        *,
        holder: str,
        epoch: int,
        decision: str,
        reason: str,
        evidence: Any,
        next_step: int | None = None,
        end_state: str | None = None,
        move_champion_to: int | None = None,
        step: int | None = None,
        at: float | None = None,
    ) -> RolloutState:
        """Apply one verdict of the lease holder in one transaction.

        Checks the fence (`holder` holds the lease at `epoch` and the rollout runs), stores
        the verdict (a ``continue`` that changes nothing at most every 30 s) and audits it
        with its `evidence` (such a ``continue`` at most once a minute), moves to
        `next_step` or ends in `end_state` (``promoted``, ``rolled_back``, ``aborted``).
        Ending moves ``champion`` through the alias history (audited, notified) to
        `move_champion_to`, by default the candidate on promotion and the baseline on
        rollback, in the same transaction. `step`, when given, is the step the verdict
        judged: a rollout that moved on since (a previous holder advanced it before this
        one took the lease) refuses the stale verdict.

        Raises
        ------
        RolloutLeaseLostError
            The lease was taken over, the rollout ended, or it is no longer at `step`:
            nothing was written.
        """
        verdict = _rollouts.Decision(
            decision=decision,
            reason=reason,
            evidence=evidence,
            next_step=next_step,
            end_state=end_state,
            move_champion_to=move_champion_to,
            judged_step=step,
        )
        stamp = time.time() if at is None else at
        with self._db.transaction(write=True) as conn:
            return _rollouts.decide(
                conn,
                rollout_id,
                holder=holder,
                epoch=epoch,
                verdict=verdict,
                at=stamp,
                moves=self._moves,
            )

    def promote_rollout(self, name: str, *, reason: str = "") -> RolloutState:
        """End `name`'s running rollout by hand and move ``champion`` to its candidate."""
        with self._db.transaction(write=True) as conn:
            return self._end_by_hand(conn, name, "promoted", reason or "promoted by hand")

    def abort_rollout(self, name: str, *, reason: str = "") -> RolloutState:
        """End `name`'s running rollout by hand; ``champion`` stays where it is."""
        with self._db.transaction(write=True) as conn:
            return self._end_by_hand(conn, name, "aborted", reason or "aborted by hand")

    def _end_by_hand(self, conn: Connection, name: str, state: str, reason: str) -> RolloutState:
        return _rollouts.end_manually(
            conn, name, state=state, reason=reason, at=time.time(), moves=self._moves, url=self.url
        )

    def verdicts(self, rollout_id: int) -> list[VerdictRow]:
        """A rollout's stored verdicts, oldest first (a plot-friendly history)."""
        with self._db.transaction(write=False) as conn:
            return _rollouts.verdicts(conn, rollout_id)

    # -- files ------------------------------------------------------------------------

    def fetch(self, release: Release) -> Path:
        """A directory of the release's files, each checked against its sha256.

        Files are fetched once into the shared cache; from there each is read once,
        hashed while it is copied into a directory private to this process, and only
        that copy is handed out (see `headrace.registry._copies`): a file swapped in the
        cache after the check can never be loaded (or unpickled). The private copy is
        reused for the life of the process.
        """
        if self.signing.require_signed:
            with self._db.transaction(write=False) as conn:
                check_signed(
                    conn,
                    self.signing,
                    name=release.name,
                    version=release.version,
                    digest=release.digest,
                )
        return materialize(
            release.manifest.all_files(),
            digest=release.digest,
            ref=release.ref,
            cache_dir=self.cache_dir,
            artifacts=self.artifacts,
        )

    def clear_cache(self, release: Release) -> None:
        """Forget the cached and the private copies of a release's files."""
        _copies.forget(release.digest, cache_dir=self.cache_dir)

    # -- audit ------------------------------------------------------------------------

    def audit_log(
        self, *, subject: str | None = None, action: str | None = None
    ) -> list[AuditRecord]:
        """Audit records in order (optionally one subject's, e.g. ``fraud``)."""
        with self._db.transaction(write=False) as conn:
            return list(iter_records(conn, subject=subject, action=action))

    def verify_audit(self) -> int:
        """Walk the audit chain and check every release, alias and tag against it; return
        the chain's length.

        Raises
        ------
        AuditChainBrokenError
            A record was altered, removed or reordered.
        RegistryIntegrityError
            A release, alias or tag disagrees with the chain (see `verify_registry`).
        """
        return self.verify_integrity().records

    def verify_integrity(self) -> ChainState:
        """`verify_audit` with what it found: records, head hash, releases checked."""
        with self._db.transaction(write=False) as conn:
            return verify_registry(conn)

    def write_checkpoint(self, store: CheckpointStore, *, signer: Signer) -> tuple[Checkpoint, str]:
        """Verify the registry, then write a signed checkpoint of its chain to `store`."""
        state = self.verify_integrity()
        checkpoint = make_checkpoint(
            seq=state.records,
            head=state.head or GENESIS_HASH,
            registry=redact_url(self.url),
            signer=signer,
        )
        return checkpoint, store.write(checkpoint)

    def verify_checkpoint(
        self, store: CheckpointStore, *, verifier: Verifier
    ) -> tuple[ChainState, Checkpoint]:
        """`verify_integrity`, then check the chain extends the newest checkpoint in `store`.

        Raises
        ------
        AuditError
            `store` has no checkpoint, or its signature is not `verifier`'s.
        AuditChainBrokenError
            The chain is shorter than the checkpoint or differs from it.
        """
        found = store.latest()
        if found is None:
            raise AuditError(
                f"No checkpoint in '{store.url}': write one with `headrace audit checkpoint` "
                "(and keep writing them) before verifying against it."
            )
        checkpoint, where = found
        with self._db.transaction(write=False) as conn:
            state = verify_against_checkpoint(conn, checkpoint, verifier=verifier, where=where)
        return state, checkpoint

    def record_event(self, action: str, subject: str, details: dict[str, Any]) -> AuditRecord:
        """Append an event that is not a registry mutation (a drift alarm, a rollout
        decision) to the audit chain, under the same write lock as every mutation."""
        with self._db.transaction(write=True) as conn:
            return append_record(
                conn, actor=self.actor, action=action, subject=subject, details=details
            )
