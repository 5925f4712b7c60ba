"""A SIGTERM that reaches ``headrace serve`` while it starts up: exit 0, not death by signal.

`StopSignals` holds the signal from the start of the command until the server takes over
its own handlers; the server then stops as soon as it has started. (A SIGTERM once it
serves is tested end to end in ``tests/e2e/test_serve.py``: drained, exit 0.)
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support.serving import free_port

CHILD = """
import os, signal, sys
from pathlib import Path
from headrace.registry import Registry
from headrace.serving import build_app, serve_spec_from_dict
from headrace.serving.server import StopSignals, bind, uvicorn_server

root, port, how = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
config = serve_spec_from_dict({"port": port}, where="test")
sock = bind(config)
with StopSignals() as early, Registry(
    f"sqlite:///{root / 'registry.db'}", artifacts=f"file://{root / 'artifacts'}",
    actor="test", cache_dir=root / "cache",
) as registry:
    os.kill(os.getpid(), getattr(signal, how))  # a stop while the app is being built
    app = build_app(registry, config)
    server = uvicorn_server(app, config, early=early)
    print("received", early.received, flush=True)
    server.run(sockets=[sock])
    print("started", server.started, "stopped", app.stopping, flush=True)
"""


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_a_stop_during_start_up_exits_0(tmp_path: Path, how: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(free_port()), how],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr)
    received, finished = done.stdout.strip().splitlines()
    assert received == f"received [{int(getattr(signal, how))}]"
    # it started (lifespan ran), then shut down cleanly at once
    assert finished == "started True stopped True"
    assert "Traceback" not in done.stderr


def test_stop_signals_restores_the_previous_handlers() -> None:
    from headrace.serving.server import StopSignals

    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as early:
        assert signal.getsignal(signal.SIGTERM) != before
        signal.raise_signal(signal.SIGTERM)
    assert early.received == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) == before
