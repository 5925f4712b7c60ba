"""Rollouts through the HTTP and gRPC servers: routing, shadow, evidence, per-arm metrics.

A real SQLite registry holds two real scikit-learn releases of ``fraud`` (1 is champion);
a rollout is started with the registry's own API (`plan_rollout`, `Registry.start_rollout`)
while a real server (uvicorn on a free port, gRPC beside it) runs. Clients are real:
httpx over a socket, tritonclient over gRPC. Every answer is checked against the model
that should have produced it (its ``predict_proba``), not only against a version label.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest

from headrace.registry import Registry, RolloutState
from headrace.release.bundle import build_draft
from headrace.rollout import plan_rollout, read_evidence
from headrace.rollout.routing import candidate_mask
from headrace.rollout.state import plan_of
from support.models import ModelFiles, draft_from, local_registry, write_sklearn_release
from support.serving import LAB_MODEL, RunningServer, free_port, running_server

# Far more events than these tests send: the judge never decides on its own here.
MIN_SAMPLES = 1_000_000
FAST = {"poll_interval_s": 0.2, "rollout_poll_s": 0.2}
WAIT_S = 60.0  # a bound against hanging, not a measured assertion


@dataclass
class Releases:
    registry: Registry
    v1: ModelFiles
    v2: ModelFiles
    root: Path

    def scores(self, version: int, x: np.ndarray) -> np.ndarray:
        files = self.v1 if version == 1 else self.v2
        model = joblib.load(files.model)
        result: np.ndarray = model.predict_proba(x)[:, 1]
        return result


@pytest.fixture
def releases(tmp_path: Path) -> Iterator[Releases]:
    """``fraud`` 1 (champion) and 2: logistic regressions that score rows differently."""
    v1 = write_sklearn_release(tmp_path / "fraud-1", seed=7, c=1.0)
    v2 = write_sklearn_release(tmp_path / "fraud-2", seed=8, c=0.05)
    with local_registry(tmp_path / "home") as registry:
        registry.register(draft_from(v1, tmp_path / "fraud-1"), alias="champion")
        registry.register(draft_from(v2, tmp_path / "fraud-2"))
        yield Releases(registry, v1, v2, tmp_path)


def _start(releases: Releases, strategy: str, steps: list[float] | None) -> RolloutState:
    plan = plan_rollout(
        releases.registry, "fraud", 2, strategy=strategy, steps=steps, min_samples=MIN_SAMPLES
    )
    return releases.registry.start_rollout(plan)


def _until(condition: Any, what: str) -> float:
    """Wait for `condition()`; return how long it took (a hang fails after WAIT_S)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > WAIT_S:
            raise AssertionError(f"{what}: not within {WAIT_S:g} s")
        time.sleep(0.02)
    return time.monotonic() - started


def _routing_ready(server: RunningServer, rollout_id: int) -> bool:
    running: dict[str, tuple[int, int]] = server.app.dataplane.repository.rollouts.running
    return "fraud" in running and running["fraud"][0] == rollout_id


def _body(x: np.ndarray, *, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [
            {"name": "x", "datatype": "FP64", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def _infer(
    client: httpx.Client, x: np.ndarray, *, key: str | None = None, request_id: str | None = None
) -> dict[str, Any]:
    headers = {} if key is None else {"x-headrace-key": key}
    response = client.post(
        "/v2/models/fraud/infer", json=_body(x, request_id=request_id), headers=headers
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _output(answer: dict[str, Any], name: str) -> list[Any]:
    (tensor,) = [o for o in answer["outputs"] if o["name"] == name]
    data: list[Any] = tensor["data"]
    return data


def _metric(text: str, series: str, **labels: str) -> float:
    """The value of one sample of the exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{series}{{"):
            name_labels, value = line.rsplit(" ", 1)
            inner = name_labels[len(series) + 1 : -1]
            if ",".join(sorted(inner.split(","))) == wanted:
                return float(value)
    return 0.0


def test_a_canary_splits_requests_sticky_by_key_and_each_arm_answers_with_its_release(
    releases: Releases, rng: np.random.Generator
) -> None:
    with running_server(releases.registry, port=free_port(), settings=FAST) as server:
        state = _start(releases, "canary", [50])
        plan = plan_of(state)
        _until(lambda: _routing_ready(server, state.id), "the candidate joins routing")
        keys = [f"user-{i}" for i in range(120)]
        expected = candidate_mask(keys, salt=plan.salt, weight=50.0)
        rows = {"baseline": 0, "candidate": 0}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for key, on_candidate in zip(keys, expected, strict=True):
                n = int(rng.integers(1, 4))
                x = rng.normal(0, 1, size=(n, 5))
                answer = _infer(client, x, key=key)
                version = 2 if on_candidate else 1
                assert answer["model_version"] == str(version), key
                assert answer["parameters"]["release"] == f"fraud:{version}"
                np.testing.assert_allclose(
                    _output(answer, "score"), releases.scores(version, x), rtol=1e-9
                )
                rows["candidate" if on_candidate else "baseline"] += n
            # Sticky: the same key lands on the same arm again; without the header the
            # request's own id is the key.
            x = rng.normal(0, 1, size=(1, 5))
            for key, on_candidate in list(zip(keys, expected, strict=True))[:20]:
                again = _infer(client, x, key=key)
                by_id = _infer(client, x, request_id=key)
                assert again["model_version"] == by_id["model_version"] == str(1 + on_candidate)
                rows["candidate" if on_candidate else "baseline"] += 2
            metrics = client.get("/metrics").text
        assert 0 < expected.sum() < len(keys)  # both arms took traffic
        for arm in ("baseline", "candidate"):
            assert (
                _metric(metrics, "headrace_rollout_rows_total", model="fraud", arm=arm)
                == (rows[arm])
            )
            assert _metric(metrics, "headrace_rollout_errors_total", model="fraud", arm=arm) == 0
        requests_c = _metric(
            metrics, "headrace_rollout_requests_total", model="fraud", arm="candidate"
        )
        assert requests_c == int(expected.sum()) + 2 * int(expected[:20].sum())
        assert _metric(
            metrics, "headrace_rollout_model_seconds_count", model="fraud", arm="candidate"
        ) == (requests_c)
    # The server's last evidence was written at shutdown: read it back summed per step.
    evidence = read_evidence(releases.registry, state.id)[0]
    assert evidence.baseline.events == rows["baseline"]
    assert evidence.candidate.events == rows["candidate"]
    assert evidence.baseline.errors == evidence.candidate.errors == 0
    assert sum(evidence.candidate.latency_counts) == requests_c  # one per request
    assert evidence.candidate.scored == rows["candidate"]  # scores into the plan's bins
    assert len(evidence.candidate.score_counts) == len(plan.score_edges) + 1


def test_a_shadow_answers_from_the_baseline_and_keeps_the_candidates_outputs_apart(
    releases: Releases, rng: np.random.Generator
) -> None:
    shadow = releases.root / "shadow" / "serving.jsonl"
    settings = {**FAST, "shadow_path": str(shadow)}
    sent: dict[str, np.ndarray] = {}
    with running_server(releases.registry, port=free_port(), settings=settings) as server:
        state = _start(releases, "shadow", None)  # the candidate shadows all traffic
        _until(lambda: _routing_ready(server, state.id), "the candidate joins routing")
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(40):
                x = rng.normal(0, 1, size=(int(rng.integers(1, 4)), 5))
                answer = _infer(client, x, key=f"event-{i}")
                assert answer["model_version"] == "1"
                np.testing.assert_allclose(_output(answer, "score"), releases.scores(1, x))
                sent[f"event-{i}"] = x
    # Shutdown let the shadow tasks finish before the last evidence was written.
    lines = [json.loads(line) for line in shadow.read_text().splitlines()]
    assert sorted(line["key"] for line in lines) == sorted(sent)
    for line in lines:
        x = sent[line["key"]]
        assert line["release"] == "fraud:2" and line["baseline_release"] == "fraud:1"
        assert line["rollout"] == state.id and line["rows"] == len(x)
        np.testing.assert_allclose(line["scores"], releases.scores(2, x), rtol=1e-9)
        labels = np.where(releases.scores(1, x) >= 0.5, "fraud", "legit")
        assert line["baseline_predictions"] == labels.tolist()
    total = sum(len(x) for x in sent.values())
    evidence = read_evidence(releases.registry, state.id)[0]
    assert evidence.baseline.events == evidence.candidate.events == total
    assert evidence.pairs.pairs == evidence.pairs.diffs == total
    disagreements = sum(
        int(np.sum((releases.scores(1, x) >= 0.5) != (releases.scores(2, x) >= 0.5)))
        for x in sent.values()
    )
    assert evidence.pairs.disagreements == disagreements
    mean_diff = np.mean(
        np.concatenate([releases.scores(2, x) - releases.scores(1, x) for x in sent.values()])
    )
    assert evidence.pairs.diff_sum / total == pytest.approx(mean_diff, rel=1e-9)


class _Loop:
    """A client sending requests for keys in a loop until stopped, recording answers."""

    def __init__(self, url: str, keys: list[str], x: np.ndarray) -> None:
        self.url, self.keys, self.x = url, keys, x
        self.answers: list[tuple[float, str, str]] = []  # time, key, version
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-client")

    def __enter__(self) -> _Loop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                key = self.keys[i % len(self.keys)]
                i += 1
                try:
                    response = client.post(
                        "/v2/models/fraud/infer",
                        json=_body(self.x),
                        headers={"x-headrace-key": key},
                    )
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text}")
                    continue
                self.answers.append((time.monotonic(), key, response.json()["model_version"]))

    def last_round(self) -> set[str]:
        """The versions of the latest answer per key."""
        latest: dict[str, str] = {}
        for _, key, version in self.answers:
            latest[key] = version
        return set(latest.values()) if len(latest) == len(self.keys) else set()


def test_promotion_moves_every_request_to_the_candidate_with_no_failed_request(
    releases: Releases, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_server(releases.registry, port=free_port(), settings=FAST) as server:
        state = _start(releases, "canary", [50])
        plan = plan_of(state)
        _until(lambda: _routing_ready(server, state.id), "the candidate joins routing")
        keys = [f"user-{i}" for i in range(16)]
        mask = candidate_mask(keys, salt=plan.salt, weight=50.0)
        assert 0 < mask.sum() < len(keys)
        x = rng.normal(0, 1, size=(2, 5))
        with _Loop(server.url, keys, x) as loop:
            _until(lambda: loop.last_round() == {"1", "2"}, "both arms answer")
            releases.registry.promote_rollout("fraud", reason="test")
            took = _until(lambda: loop.last_round() == {"2"}, "every key on the promoted release")
            all_new = time.monotonic()
            answered = len(loop.answers)
            _until(lambda: len(loop.answers) > answered + 20, "more answers after the switch")
        assert loop.failures == []
        # Once every key was on the promoted release, none went back to the old one.
        assert {v for t, _, v in loop.answers if t > all_new} == {"2"}
        assert server.app.dataplane.repository.rollouts.running == {}
        with capsys.disabled():
            print(
                f"\npromotion: every key on fraud:2 {took:.2f}s after the decision "
                f"(poll 0.2s); {len(loop.answers)} answers, 0 failed"
            )


def test_an_abort_drops_the_candidate_from_routing(
    releases: Releases, rng: np.random.Generator
) -> None:
    with running_server(releases.registry, port=free_port(), settings=FAST) as server:
        state = _start(releases, "canary", [100])
        _until(lambda: _routing_ready(server, state.id), "the candidate joins routing")
        x = rng.normal(0, 1, size=(1, 5))
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert _infer(client, x, key="a")["model_version"] == "2"  # 100%: all candidate
            releases.registry.abort_rollout("fraud", reason="test")
            repository = server.app.dataplane.repository
            _until(lambda: repository.rollouts.running == {}, "the rollout leaves routing")
            for i in range(10):
                assert _infer(client, x, key=f"k{i}")["model_version"] == "1"
        assert ("fraud", 2) not in repository.pool  # the candidate was freed


def test_grpc_requests_route_by_their_id(releases: Releases, rng: np.random.Generator) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    grpc_port = free_port()
    settings = {**FAST, "grpc_port": grpc_port}
    with running_server(releases.registry, port=free_port(), settings=settings) as server:
        state = _start(releases, "ab", [50])
        plan = plan_of(state)
        _until(lambda: _routing_ready(server, state.id), "the candidate joins routing")
        ids = [f"order-{i}" for i in range(40)]
        expected = candidate_mask(ids, salt=plan.salt, weight=50.0)
        assert 0 < expected.sum() < len(ids)
        with grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}") as client:
            for request_id, on_candidate in zip(ids, expected, strict=True):
                x = rng.normal(0, 1, size=(2, 5))
                tensor = grpcclient.InferInput("input-0", [2, 5], "FP64")
                tensor.set_data_from_numpy(x)
                result = client.infer("fraud", [tensor], request_id=request_id)
                response = result.get_response()
                version = 2 if on_candidate else 1
                assert response.model_version == str(version)
                assert response.id == request_id
                np.testing.assert_allclose(
                    result.as_numpy("score"), releases.scores(version, x), rtol=1e-9
                )
    evidence = read_evidence(releases.registry, state.id)[0]
    assert evidence.candidate.events == 2 * int(expected.sum())
    assert evidence.baseline.events == 2 * int(len(ids) - expected.sum())


def _register_failing(releases: Releases) -> int:
    """``fraud`` 3: a python model (the shipped `FailingModel`) that raises on rows whose
    f0 > 50 and answers 1.0 otherwise; same schema as 1 and 2."""
    directory = releases.root / "fraud-3"
    directory.mkdir()
    (directory / "model.py").write_text(LAB_MODEL)
    scratch = releases.root / "fraud-3-scratch"
    scratch.mkdir()
    draft = build_draft(
        Path(f"{directory / 'model.py'}:predict"),
        name="fraud",
        flavor="python",
        workdir=scratch,
        schema_path=releases.v1.schema,
        data_path=releases.v1.data,
        code_version="test",
    )
    version: int = releases.registry.register(draft).version
    return version


def test_a_candidates_model_failures_are_its_errors_and_bad_input_is_nobodys(
    releases: Releases, rng: np.random.Generator
) -> None:
    version = _register_failing(releases)
    plan = plan_rollout(
        releases.registry,
        "fraud",
        version,
        strategy="canary",
        steps=[100],
        min_samples=MIN_SAMPLES,
    )
    with running_server(releases.registry, port=free_port(), settings=FAST) as server:
        state = releases.registry.start_rollout(plan)
        _until(lambda: _routing_ready(server, state.id), "the candidate joins routing")
        statuses: list[int] = []
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(12):
                x = rng.normal(0, 1, size=(2, 5))
                if i % 3 == 1:
                    x[1, 0] = 60.0  # the candidate's model raises on this row
                elif i % 3 == 2:
                    x[0, 0] = 1000.0  # over the schema's max: the client's fault
                response = client.post(
                    "/v2/models/fraud/infer", json=_body(x), headers={"x-headrace-key": f"k{i}"}
                )
                statuses.append(response.status_code)
            metrics = client.get("/metrics").text
    assert statuses == [200, 500, 400] * 4
    assert _metric(metrics, "headrace_rollout_errors_total", model="fraud", arm="candidate") == 4
    assert _metric(metrics, "headrace_rollout_rows_total", model="fraud", arm="candidate") == 24
    evidence = read_evidence(releases.registry, state.id)[0]
    assert evidence.candidate.events == 24 and evidence.candidate.errors == 4
    assert evidence.baseline.events == 0  # 100%: every key on the candidate


def test_a_failing_shadow_never_fails_an_answer(
    releases: Releases, rng: np.random.Generator
) -> None:
    version = _register_failing(releases)
    plan = plan_rollout(
        releases.registry, "fraud", version, strategy="shadow", steps=None, min_samples=MIN_SAMPLES
    )
    shadow = releases.root / "shadow.jsonl"
    settings = {**FAST, "shadow_path": str(shadow)}
    with running_server(releases.registry, port=free_port(), settings=settings) as server:
        state = releases.registry.start_rollout(plan)
        _until(lambda: _routing_ready(server, state.id), "the candidate joins routing")
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(10):
                x = rng.normal(0, 1, size=(3, 5))
                x[:, 0] = 60.0 if i % 2 else 0.0  # odd requests: the candidate raises on all
                answer = _infer(client, x, key=f"e{i}")
                assert answer["model_version"] == "1"
                np.testing.assert_allclose(_output(answer, "score"), releases.scores(1, x))
    lines = {line["key"]: line for line in map(json.loads, shadow.read_text().splitlines())}
    assert sorted(lines) == sorted(f"e{i}" for i in range(10))
    for i in range(10):
        line = lines[f"e{i}"]
        if i % 2:
            assert line["predictions"] == [] and len(line["rejections"]) == 3
            assert all(r["stage"] == "predict" for r in line["rejections"])
        else:
            assert line["predictions"] == [1.0, 1.0, 1.0] and line["rejections"] == []
    evidence = read_evidence(releases.registry, state.id)[0]
    assert evidence.baseline.events == evidence.candidate.events == 30
    assert evidence.baseline.errors == 0 and evidence.candidate.errors == 15
    assert evidence.pairs.pairs == 15  # only rows both releases predicted


def test_a_step_widens_the_candidates_share_and_evidence_is_kept_per_step(
    releases: Releases, rng: np.random.Generator
) -> None:
    # The server's own participant waits an hour between looks: the test decides.
    settings = {**FAST, "rollout_poll_s": 3600}
    with running_server(releases.registry, port=free_port(), settings=settings) as server:
        state = _start(releases, "canary", [25, 100])
        plan = plan_of(state)
        _until(lambda: _routing_ready(server, state.id), "the candidate joins routing")
        keys = [f"user-{i}" for i in range(40)]
        at_25 = candidate_mask(keys, salt=plan.salt, weight=25.0)
        x = rng.normal(0, 1, size=(1, 5))
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for key, on_candidate in zip(keys, at_25, strict=True):
                assert _infer(client, x, key=key)["model_version"] == str(1 + on_candidate)
            epoch = releases.registry.acquire_lease(state.id, holder="test", ttl_s=60)
            assert epoch is not None
            releases.registry.decide(
                state.id,
                holder="test",
                epoch=epoch,
                decision="next_step",
                reason="test",
                evidence={},
                next_step=1,
            )
            running = server.app.dataplane.repository.rollouts
            _until(lambda: running.running.get("fraud") == (state.id, 1), "the next step")
            for key in keys:  # 100%: every key, and those already there stay
                assert _infer(client, x, key=key)["model_version"] == "2"
    steps = read_evidence(releases.registry, state.id)
    assert steps[0].candidate.events == int(at_25.sum())
    assert steps[0].baseline.events == len(keys) - int(at_25.sum())
    assert steps[1].candidate.events == len(keys) and steps[1].baseline.events == 0


def test_the_server_alone_rolls_back_a_failing_candidate(
    releases: Releases, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    version = _register_failing(releases)
    plan = plan_rollout(
        releases.registry, "fraud", version, strategy="canary", steps=[50], min_samples=50
    )
    with running_server(releases.registry, port=free_port(), settings=FAST) as server:
        state = releases.registry.start_rollout(plan)
        _until(lambda: _routing_ready(server, state.id), "the candidate joins routing")
        sent = 0
        with httpx.Client(base_url=server.url, timeout=30) as client:

            def rolled_back() -> bool:
                nonlocal sent
                x = rng.normal(0, 1, size=(1, 5))
                x[0, 0] = 60.0  # the candidate's model raises on every such row
                response = client.post(
                    "/v2/models/fraud/infer", json=_body(x), headers={"x-headrace-key": f"u{sent}"}
                )
                sent += 1
                assert response.status_code in (200, 500)
                latest = releases.registry.rollout("fraud")
                return latest is not None and latest.state == "rolled_back"

            _until(rolled_back, "the server's participant rolls the candidate back")
            repository = server.app.dataplane.repository
            _until(lambda: repository.rollouts.running == {}, "the candidate leaves routing")
            x = rng.normal(0, 1, size=(1, 5))
            x[0, 0] = 60.0
            for i in range(20):
                assert _infer(client, x, key=f"after-{i}")["model_version"] == "1"
        (verdict,) = [v for v in releases.registry.verdicts(state.id) if v.decision == "rollback"]
        assert verdict.holder == server.app.dataplane.participant.instance
        assert verdict.holder.startswith("server:")
    with capsys.disabled():
        print(f"\nfailing candidate rolled back by the server after {sent} requests")
