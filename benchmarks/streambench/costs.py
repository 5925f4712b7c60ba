"""Where a worker's time goes: CPU per stage without Kafka, and py-spy shares in a live run."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from streambench.data import BATCH, registry_for


def stage_costs(root: Path, kind: str, payloads: list[bytes]) -> dict[str, float]:
    """Microseconds per event of each worker stage, on 512-event batches, no Kafka."""
    from headrace.inference.loading import load_service
    from headrace.inference.matrix import model_matrix
    from headrace.inference.postprocess import postprocess
    from headrace.inference.validate import records_to_columns, validate
    from headrace.pipeline import Worker, pipeline_spec_from_dict
    from headrace.pipeline.dedupe import MemoryDedupe
    from headrace.pipeline.records import output_records
    from headrace.streams.base import Message

    with registry_for(root) as registry:
        service = load_service(registry, f"bench-{kind}@champion")
    batches = [
        [
            Message(value=v, topic="in", partition=i % 4, offset=j * BATCH + i, key=b"k")
            for i, v in enumerate(payloads[j * BATCH : (j + 1) * BATCH])
        ]
        for j in range(min(40, len(payloads) // BATCH))
    ]
    n = sum(len(b) for b in batches)
    schema, names = service.schema, service.schema.names
    costs: dict[str, float] = {}

    def timed(name: str, fn: Callable[[list[Message]], Any]) -> None:
        for batch in batches[:3]:  # warm
            fn(batch)
        started = time.perf_counter()
        for batch in batches:
            fn(batch)
        costs[name] = (time.perf_counter() - started) * 1e6 / n

    decoded = {id(b): [orjson.loads(m.value) for m in b] for b in batches}
    columns = {id(b): records_to_columns(decoded[id(b)], names=names) for b in batches}
    checked = {id(b): validate(schema, columns[id(b)], n_rows=len(b)) for b in batches}
    matrices = {
        id(b): model_matrix(schema, checked[id(b)].columns, inputs=service.inputs) for b in batches
    }
    raw = {id(b): service.model.predict(matrices[id(b)]) for b in batches}
    result = {id(b): service.infer_records(decoded[id(b)]) for b in batches}
    timed("decode (orjson.loads)", lambda b: [orjson.loads(m.value) for m in b])
    timed("records_to_columns", lambda b: records_to_columns(decoded[id(b)], names=names))
    timed("validate", lambda b: validate(schema, columns[id(b)], n_rows=len(b)))
    timed(
        "model_matrix",
        lambda b: model_matrix(schema, checked[id(b)].columns, inputs=service.inputs),
    )
    timed("model predict_proba", lambda b: service.model.predict(matrices[id(b)]))
    timed("postprocess", lambda b: postprocess(raw[id(b)], config=service.config))
    timed("infer_records (the 5 above)", lambda b: service.infer_records(decoded[id(b)]))
    # The worker's fast path for batches without a bad event: one typed decode of the
    # whole batch into columns, then validate on typed arrays.
    from headrace.inference.json_batch import TypedBatchDecoder

    typed = TypedBatchDecoder(schema, id_field="id")
    timed(
        "fast path: typed decode (TypedBatchDecoder)", lambda b: typed.decode([m.value for m in b])
    )
    fast_columns = {id(b): typed.decode([m.value for m in b]) for b in batches}
    timed(
        "fast path: infer on typed columns",
        lambda b: service.infer(fast_columns[id(b)].columns, n_rows=len(b)),  # type: ignore[union-attr]
    )

    def encode_outputs(b: list[Message]) -> Any:
        r = result[id(b)]
        return output_records(
            b,
            event_ids=[str(i) for i in range(len(b))],
            predictions=r.predictions.tolist(),
            scores=None if r.scores is None else r.scores.tolist(),
            event_times_ms=[0] * len(b),
            release=r.release,
            release_digest=r.release_digest,
            processed_at_ms=0,
        )

    timed("output_records (encode outputs)", encode_outputs)
    dedupe = MemoryDedupe(ttl_s=3600, max_keys=1_000_000)
    ids = {id(b): [str(m.offset) for m in b] for b in batches}
    timed(
        "dedupe seen + record (memory)",
        lambda b: (dedupe.seen(ids[id(b)]), dedupe.record(ids[id(b)])),
    )

    class Null:
        url = "null://"

        def send(self, records: Any) -> None: ...
        def flush(self, *, timeout: float) -> None: ...
        def commit(self, messages: Any) -> None: ...
        def pause(self) -> None: ...
        def resume(self) -> None: ...

    spec = pipeline_spec_from_dict(
        {
            "name": "bench",
            "model": "x",
            "source": {"url": "memory://x", "topic": "in"},
            "outputs": [{"url": "memory://x", "topic": "out"}],
            "id_field": "id",
        }
    )
    null = Null()
    worker = Worker(
        spec,
        service=service,
        source=null,  # type: ignore[arg-type]
        outputs=[null],  # type: ignore[list-item]
        dead_letter=null,  # type: ignore[arg-type]
        dedupe=MemoryDedupe(ttl_s=3600, max_keys=1_000_000),
    )
    timed("Worker.process, no I/O (all of the above)", worker.process)
    return costs


# Where a sample of the worker's main thread is counted: the innermost frame whose file
# (and, for the Kafka modules and the worker's own lines, function or line) names a stage.
PROFILE_RULES: list[tuple[str, str, str | None]] = [
    ("runtimes/", "predict (model)", None),
    ("inference/postprocess.py", "postprocess", None),
    ("inference/matrix.py", "model_matrix", None),
    ("inference/json_batch.py", "decode (JSON -> records/rows)", None),
    ("inference/validate.py", "validate + records_to_columns", None),
    ("inference/service.py", "validate + records_to_columns", None),
    ("pipeline/records.py", "output encoding (output_records)", None),
    ("pipeline/dedupe.py", "dedupe", None),
    ("pipeline/stats.py", "stats", None),
    ("streams/kafka/source.py", "poll: consume (wait + fetch)", "poll:consume"),
    ("streams/kafka/source.py", "poll: build Message objects", "poll"),
    ("streams/kafka/sink.py", "produce (KafkaSink.send)", "send"),
    ("streams/kafka/sink.py", "flush (wait for acks)", "flush"),
    ("streams/kafka/source.py", "commit (synchronous)", "commit"),
    ("pipeline/worker.py", "settle (flush + record + commit)", "settle"),
    ("streams/base.py", "poll: build Message objects", None),
    ("pipeline/worker.py", "decode (JSON -> records/rows)", "worker:decode"),
    ("pipeline/worker.py", "Worker.run loop", "run"),
    ("pipeline/worker.py", "Worker.process bookkeeping", None),
]
_DECODE_FUNCTIONS = ("_decode", "_decode_fast")


def _consume_line() -> int:
    """The line of KafkaSource.poll that waits for and fetches messages."""
    import headrace.streams.kafka.source as kafka_module

    kafka_source = Path(kafka_module.__file__).read_text().splitlines()
    return next(i for i, t in enumerate(kafka_source, 1) if "consumer.poll(" in t)


def profile_breakdown(path: Path) -> dict[str, float]:
    """Share of the worker's main-thread samples per stage, from py-spy's speedscope file.

    Samples before the first and after the last one inside `Worker.process` (start-up,
    the group join, the idle tail) are left out.
    """
    consume_line = _consume_line()
    data = orjson.loads(path.read_bytes())
    frames = data["shared"]["frames"]

    def stage(index: int) -> str | None:
        frame = frames[index]
        func = frame["name"].rpartition(".")[2]  # py-spy names methods Class.method
        file, line = frame.get("file") or "", frame.get("line") or 0
        if file.endswith("streams/kafka/source.py") and func == "poll" and line == consume_line:
            func = "poll:consume"
        if file.endswith("pipeline/worker.py") and func in _DECODE_FUNCTIONS:
            func = "worker:decode"
        for where, name, wanted in PROFILE_RULES:
            if where in file and (wanted is None or wanted == func):
                return name
        return None

    counts: collections.Counter[str] = collections.Counter()
    for profile in data["profiles"]:
        samples, weights = profile["samples"], profile["weights"]
        inside = [
            i
            for i, stack in enumerate(samples)
            if any(
                frames[k]["name"].rpartition(".")[2] == "process"
                and (frames[k].get("file") or "").endswith("pipeline/worker.py")
                for k in stack
            )
        ]
        if not inside:
            continue
        for i in range(inside[0], inside[-1] + 1):
            found = next(
                (name for k in reversed(samples[i]) if (name := stage(k)) is not None), "other"
            )
            counts[found] += weights[i]
    total = sum(counts.values()) or 1
    return {name: count / total for name, count in counts.most_common()}
