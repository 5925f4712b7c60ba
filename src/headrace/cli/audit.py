"""``headrace audit verify|log|checkpoint``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from headrace.cli.context import open_registry
from headrace.cli.output import print_aligned, print_json

if TYPE_CHECKING:
    from headrace.audit.keys import Signer, Verifier

__all__ = ["app"]

app = typer.Typer(help="Verify and read the hash-chained audit log.", no_args_is_help=True)

_HMAC_ENV = "HEADRACE_AUDIT_HMAC_KEY"
_SIGNING_KEY_ENV = "HEADRACE_AUDIT_SIGNING_KEY"
_VERIFY_KEY_ENV = "HEADRACE_AUDIT_VERIFY_KEY"
_CHECKPOINTS_ENV = "HEADRACE_AUDIT_CHECKPOINTS"

_Location = Annotated[
    str | None,
    typer.Option(
        "--checkpoints",
        envvar=_CHECKPOINTS_ENV,
        show_envvar=True,
        help="Where checkpoints live: a directory, file:///dir or s3://bucket/prefix.",
    ),
]
_HmacKey = Annotated[
    str | None,
    typer.Option(
        "--hmac-key",
        envvar=_HMAC_ENV,
        show_envvar=True,
        show_default=False,
        help="HMAC-SHA256 secret that signs and checks checkpoints (prefer the variable).",
    ),
]


def _hmac(secret: str | None) -> Signer | None:
    from headrace.audit.keys import HmacKey

    return None if not secret else HmacKey(secret.encode())


def _signer(secret: str | None, key: Path | None) -> Signer:
    from headrace.audit.keys import load_ed25519_signer
    from headrace.errors import ConfigError

    if secret and key is not None:
        raise ConfigError(f"Give one checkpoint key: {_HMAC_ENV} or --signing-key, not both.")
    if key is not None:
        return load_ed25519_signer(key)
    signer = _hmac(secret)
    if signer is None:
        raise ConfigError(
            f"A checkpoint must be signed: set {_HMAC_ENV} (a random secret) or pass "
            f"--signing-key (an Ed25519 PEM private key, or {_SIGNING_KEY_ENV})."
        )
    return signer


def _verifier(secret: str | None, key: Path | None) -> Verifier:
    from headrace.audit.keys import HmacKey, load_ed25519_verifier
    from headrace.errors import ConfigError

    if secret and key is not None:
        raise ConfigError(f"Give one checkpoint key: {_HMAC_ENV} or --verify-key, not both.")
    if key is not None:
        return load_ed25519_verifier(key)
    if not secret:
        raise ConfigError(
            f"Checking a checkpoint needs its key: set {_HMAC_ENV} or pass --verify-key "
            f"(the Ed25519 public key, or {_VERIFY_KEY_ENV})."
        )
    return HmacKey(secret.encode())


@app.command("verify")
def verify(
    ctx: typer.Context,
    checkpoints: _Location = None,
    hmac_key: _HmacKey = None,
    verify_key: Annotated[
        Path | None,
        typer.Option(
            envvar=_VERIFY_KEY_ENV,
            show_envvar=True,
            help="Ed25519 public key (PEM) that signs checkpoints.",
        ),
    ] = None,
) -> None:
    """Walk the chain, check every release, alias and tag against it, and (with
    --checkpoints) check the chain still extends the newest signed checkpoint (exit 1)."""
    with open_registry(ctx, must_exist=True) as registry:
        if checkpoints:
            from headrace.registry.anchors import open_checkpoint_store

            store = open_checkpoint_store(checkpoints)
            state, checkpoint = registry.verify_checkpoint(
                store, verifier=_verifier(hmac_key, verify_key)
            )
            anchored = f", extends checkpoint #{checkpoint.seq} of {checkpoint.at[:19]}"
        else:
            state = registry.verify_integrity()
            anchored = ""
    typer.echo(
        f"audit chain ok: {state.records} records, head {state.head or '-'}, "
        f"{state.releases} releases match it{anchored}"
    )
    if not checkpoints:
        typer.echo(
            "note: without --checkpoints a deleted tail or an emptied registry cannot be "
            f"detected; write checkpoints with `headrace audit checkpoint` ({_CHECKPOINTS_ENV})",
            err=True,
        )


@app.command("checkpoint")
def checkpoint(
    ctx: typer.Context,
    checkpoints: _Location = None,
    hmac_key: _HmacKey = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            envvar=_SIGNING_KEY_ENV,
            show_envvar=True,
            help="Ed25519 private key (PEM) to sign with, instead of an HMAC secret.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checkpoint as JSON.")] = False,
) -> None:
    """Verify the registry, then write a signed checkpoint (sequence, head hash, time)
    outside the database, for `audit verify --checkpoints` to hold the chain to."""
    from headrace.errors import ConfigError
    from headrace.registry.anchors import open_checkpoint_store

    if not checkpoints:
        raise ConfigError(
            f"Where should the checkpoint go? Pass --checkpoints DIR|s3://bucket/prefix "
            f"or set {_CHECKPOINTS_ENV}."
        )
    signer = _signer(hmac_key, signing_key)
    store = open_checkpoint_store(checkpoints)
    with open_registry(ctx, must_exist=True) as registry:
        written, where = registry.write_checkpoint(store, signer=signer)
    if as_json:
        print_json({"checkpoint": written, "location": where})
        return
    typer.echo(f"checkpoint #{written.seq} head {written.head} -> {where}")


@app.command("log")
def log(
    ctx: typer.Context,
    subject: Annotated[
        str | None, typer.Argument(help="Only records about this release name or ref.")
    ] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action (register, alias.set…).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List audit records, oldest first."""
    with open_registry(ctx, must_exist=True) as registry:
        records = registry.audit_log(subject=subject, action=action)
    if as_json:
        print_json(records)
        return
    # aligned plain values (k=v details, short digests), one line per record in a pipe too
    print_aligned(
        ["#", "at", "actor", "action", "subject", "hash", "details"],
        [(r.seq, r.at[:19], r.actor, r.action, r.subject, r.hash, r.details) for r in records],
    )
