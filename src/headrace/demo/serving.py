"""The demo's serving part: the HTTP server beside the stream, asked a few OIP questions.

While the pipeline worker scores the stream, `DemoServer` runs ``headrace serve``'s
application (the same `build_app`, on uvicorn) in a thread on an ephemeral port of
127.0.0.1, and `ask_server` sends it what a client of KServe, Triton or MLServer would: a
handful of single-transaction requests and one batch request, each in the protocol's
JSON with one named 1-D input per schema field. The summary shows every answer and how
long the client waited for it, so the demo shows the same release answering on both
paths, the stream and the request.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from headrace.demo.data import FEATURES, MERCHANTS, Transactions

if TYPE_CHECKING:
    import uvicorn

    from headrace.registry.store import Registry

__all__ = [
    "DemoServer",
    "ServedAnswer",
    "ServingBeside",
    "ServingReport",
    "ask_server",
    "serve_beside_stream",
]

# The OIP datatype of each model input, by the schema's field type.
_DATATYPES = {
    "amount": "FP64",
    "hour": "INT64",
    "merchant": "BYTES",
    "distance_km": "FP64",
    "card_present": "BOOL",
    "tx_last_24h": "INT64",
}


@dataclass(frozen=True)
class ServedAnswer:
    """One OIP request the demo sent, and what came back.

    Attributes
    ----------
    rows
        Transactions in the request.
    status
        The HTTP status of the answer.
    latency_ms
        How long the client waited for the whole answer (connect, send, wait, read).
    predictions
        One label per row (empty when the request failed).
    scores
        One fraud probability per row (empty when the request failed).
    release
        The release that answered, like ``fraud:1``.
    error
        The server's error message when the status is not 200.
    """

    rows: int
    status: int
    latency_ms: float
    predictions: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    release: str = ""
    error: str = ""


@dataclass
class ServingReport:
    """The server's address and every answer it gave the demo, in the order asked."""

    url: str
    model: str
    answers: list[ServedAnswer] = field(default_factory=list)

    def batch_agrees(self) -> bool:
        """Whether every transaction asked alone got, in the batch, the score it got alone.

        The batch request starts with the single transactions (see `ask_server`); adaptive
        batching and the batch path must not change a transaction's answer.
        """
        singles = [a for a in self.answers if a.rows == 1 and a.status == 200]
        batches = [a for a in self.answers if a.rows > 1 and a.status == 200]
        if not singles or not batches or len(batches[0].scores) < len(singles):
            return False
        return all(
            abs(single.scores[0] - batches[0].scores[i]) <= 1e-12
            and single.predictions[0] == batches[0].predictions[i]
            for i, single in enumerate(singles)
        )


class DemoServer:
    """``headrace serve``'s app on uvicorn in a background thread, on 127.0.0.1:0.

    Parameters
    ----------
    registry
        The registry the server resolves model names in (its own connection).

    Use as a context manager: entering returns once the server answers ``/v2/health/ready``
    (its models loaded and warmed up); leaving stops it and waits for its thread.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> DemoServer:
        from headrace.serving.config import serve_spec_from_dict
        from headrace.serving.server import build_app, uvicorn_server

        config = serve_spec_from_dict(
            # rollout_poll_s: the demo worker's pace, so whichever of the two holds a
            # rollout's lease judges as soon as the evidence is in
            {"host": "127.0.0.1", "port": 0, "models": ["fraud"], "rollout_poll_s": 0.25},
            where="demo server",
        )
        server = uvicorn_server(build_app(self.registry, config), config)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self._server = server

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[listener]))
            except BaseException as exc:  # reported by __enter__ / __exit__
                self._error = exc
            finally:
                listener.close()

        self._thread = threading.Thread(target=run, name="demo-server", daemon=True)
        self._thread.start()
        try:
            self._wait_ready(timeout=60.0)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._thread is not None and not self._thread.is_alive():
                raise RuntimeError(f"the demo's HTTP server stopped at start: {self._error!r}")
            try:
                status, _ = _request(f"{self.url}/v2/health/ready", None, timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"the demo's HTTP server at {self.url} was not ready in {timeout:g}s")

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)


def _request(url: str, body: bytes | None, *, timeout: float) -> tuple[int, bytes]:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the demo talks to its own server only, not {url}")
    request = urllib.request.Request(  # noqa: S310 (loopback, checked above)
        url, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _body(data: Transactions, rows: np.ndarray) -> bytes:
    columns: dict[str, list[Any]] = {
        "amount": data.amount[rows].tolist(),
        "hour": data.hour[rows].tolist(),
        "merchant": [MERCHANTS[i] for i in data.merchant[rows].tolist()],
        "distance_km": data.distance_km[rows].tolist(),
        "card_present": data.card_present[rows].tolist(),
        "tx_last_24h": data.tx_last_24h[rows].tolist(),
    }
    inputs = [
        {"name": name, "datatype": _DATATYPES[name], "shape": [len(rows)], "data": columns[name]}
        for name in FEATURES
    ]
    return orjson.dumps({"inputs": inputs})


def _answer(rows: int, status: int, payload: bytes, seconds: float) -> ServedAnswer:
    latency_ms = seconds * 1000.0
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        document = {"error": payload[:200].decode("utf-8", "replace")}
    if status != 200 or not isinstance(document, dict) or "outputs" not in document:
        error = document.get("error", "") if isinstance(document, dict) else ""
        return ServedAnswer(rows=rows, status=status, latency_ms=latency_ms, error=str(error))
    outputs = {o["name"]: o["data"] for o in document["outputs"]}
    parameters = document.get("parameters") or {}
    return ServedAnswer(
        rows=rows,
        status=status,
        latency_ms=latency_ms,
        predictions=[str(v) for v in outputs.get("prediction", [])],
        scores=[float(v) for v in outputs.get("score", [])],
        release=str(parameters.get("release", "")),
    )


def ask_server(
    url: str,
    data: Transactions,
    *,
    model: str = "fraud",
    singles: int = 5,
    batch_rows: int = 200,
    pause_s: float = 0.05,
) -> ServingReport:
    """Send `singles` one-transaction requests, then one of `batch_rows`, and record all.

    The batch starts with the single transactions, in order, so that the summary can show
    one transaction scored alone and in a batch gets the same score.

    Parameters
    ----------
    url
        The server's base URL (``http://127.0.0.1:PORT``).
    data
        Transactions to ask about (the first ``max(singles, batch_rows)`` are used).
    model
        The model name to ask (it serves its ``champion`` release).
    pause_s
        Time between requests, so that they land while the stream is being scored.
    """
    report = ServingReport(url=url, model=model)
    endpoint = f"{url}/v2/models/{model}/infer"
    plan = [np.array([i]) for i in range(singles)] + [np.arange(min(batch_rows, len(data)))]
    for rows in plan:
        body = _body(data, rows)
        started = time.perf_counter()
        try:
            status, payload = _request(endpoint, body, timeout=30.0)
        except OSError as exc:
            status, payload = 0, orjson.dumps({"error": f"no answer: {exc}"})
        report.answers.append(_answer(len(rows), status, payload, time.perf_counter() - started))
        time.sleep(pause_s)
    return report


class ServingBeside:
    """The demo's server and its client, started before the stream, finished after it.

    Parameters
    ----------
    registry
        The demo's registry; the server opens its own connection to the same one.
    data
        The transactions the client asks about.

    Attributes
    ----------
    skipped
        Why the server did not start (the ``server`` extra is not installed), or empty.
    """

    def __init__(self, registry: Registry, data: Transactions) -> None:
        from headrace.registry.store import Registry

        self.skipped = ""
        self._registry = Registry(
            registry.url,
            artifacts=registry.artifacts,
            actor=registry.actor,
            cache_dir=registry.cache_dir,
        )
        self._server = DemoServer(self._registry)
        self._data = data
        self._report: ServingReport | None = None
        self._error: BaseException | None = None
        self._client: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's base URL (empty before `start`)."""
        return self._server.url

    def start(self) -> None:
        """Start the server (returns once it is ready) and the client's thread.

        Without the ``server`` extra (uvicorn, prometheus-client) the demo goes on without
        its server: `skipped` says what to install, and `finish` returns None.
        """
        from headrace.errors import DependencyMissingError

        try:
            self._server.__enter__()
        except DependencyMissingError as exc:
            self._registry.close()
            self.skipped = str(exc)
            return
        except BaseException:
            self._registry.close()
            raise

        def client() -> None:
            try:
                self._report = ask_server(self._server.url, self._data)
            except BaseException as exc:  # re-raised by finish()
                self._error = exc

        self._client = threading.Thread(target=client, name="demo-client", daemon=True)
        self._client.start()

    def finish(self) -> ServingReport | None:
        """Wait for the client's answers, stop the server, and return the answers.

        None when the server was `skipped`.

        Raises
        ------
        RuntimeError
            When the client failed outside a request (a failed request is an answer).
        """
        if self.skipped:
            return None
        try:
            if self._client is not None:
                self._client.join(timeout=120)
        finally:
            self._server.__exit__(None, None, None)
            self._registry.close()
        if self._error is not None or self._report is None:
            raise RuntimeError(f"the demo's OIP client failed: {self._error!r}")
        return self._report


def serve_beside_stream(registry: Registry, data: Transactions) -> ServingBeside:
    """Start the HTTP server and its client beside the stream; `finish` it afterwards."""
    serving = ServingBeside(registry, data)
    serving.start()
    return serving
