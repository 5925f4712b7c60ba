"""Serving: the Open Inference Protocol v2 over HTTP and gRPC on the shared inference core.

Sits beside `headrace.pipeline` and never uses `headrace.streams`: a request goes through
the same validate -> predict -> postprocess path as a stream event.
"""

__all__: list[str] = []
