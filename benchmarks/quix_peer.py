"""The Quix Streams peer of ``stream_throughput.py``: score each message on its own.

Run by ``stream_throughput.py --quix-python PATH`` in a venv of its own (quixstreams is
never installed into headrace's venv)::

    python3 -m venv /tmp/quix-venv
    /tmp/quix-venv/bin/pip install quixstreams scikit-learn==<headrace venv's> orjson numpy

It reads JSON events (``{"id": 7, "f00": 0.52, ..., "f19": -1.3}``), calls the model's
``predict_proba`` on one row per message inside ``sdf.apply``, and writes
``{"event_id", "prediction", "score", "processed_at_ms"}`` with ``to_topic``: a Quix
``Application`` as its documentation writes one, with its default settings apart from a
short session timeout (Tansu's group join takes about half of it) and
``auto_offset_reset="earliest"``. One addition: ``set_timestamp`` stamps each output with
the time it was scored (Quix would carry the input's timestamp over, and the benchmark
reads output timestamps). It stops after ``--max-events`` outputs, or at SIGTERM.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

N_FEATURES = 20
FEATURES = [f"f{i:02d}" for i in range(N_FEATURES)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    for name in ("--bootstrap", "--input", "--output", "--group", "--model", "--state-dir"):
        parser.add_argument(name, required=True)
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--max-events", type=int, default=0, help="stop after N outputs")
    parser.add_argument("--fetch-wait-ms", type=int, help="fetch.wait.max.ms (default: Quix's)")
    args = parser.parse_args()

    import joblib
    import numpy as np
    from quixstreams import Application

    model = joblib.load(args.model)  # a pickle this benchmark wrote itself
    proba = model.predict_proba
    positive = list(model.classes_).index(1)

    def score(event: dict[str, Any]) -> dict[str, Any]:
        row = np.array([[event[name] for name in FEATURES]], dtype=np.float64)
        p = float(proba(row)[0, positive])
        return {
            "event_id": event["id"],
            "prediction": "fraud" if p >= 0.5 else "legit",
            "score": p,
            "processed_at_ms": int(time.time() * 1000),
        }

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        consumer_extra_config={
            "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": min(500, args.session_timeout_ms // 3),
            **({} if args.fetch_wait_ms is None else {"fetch.wait.max.ms": args.fetch_wait_ms}),
        },
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    source = app.topic(args.input, value_deserializer="json")
    sink = app.topic(args.output, value_serializer="json")
    sdf = app.dataframe(source).apply(score)
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: value["processed_at_ms"])
    sdf.to_topic(sink)
    # count: stop after that many outputs; 0 runs until SIGTERM.
    app.run(count=args.max_events, collect=False)


if __name__ == "__main__":
    main()
