"""The parts of ``benchmarks/stream_throughput.py``: data and models, the broker, the
contenders (child processes), the timed runs, and where a worker's time goes."""
