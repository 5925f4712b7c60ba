"""Files as streams: replay recorded events in, write outputs and dead letters out.

`FileSource` reads one file as one partition (``Message.topic`` is the path, partition
0), in one of three formats chosen by the extension or the ``format`` option:

* JSON lines (``.jsonl``, ``.ndjson``): one message per line, the line's raw bytes as
  the value (without its line ending), whether or not they are valid JSON, so the
  pipeline can dead-letter a bad line with its original bytes. The offset is the 0-based
  line number; blank lines are skipped but keep their number.
* CSV (``.csv``, ``.tsv``): the first row names the columns; each further row becomes a
  JSON object of *strings* (``""`` for an empty cell), with the header
  ``content-type: csv`` (`CONTENT_TYPE_HEADER`, `CSV_CONTENT_TYPE`) so the pipeline
  parses each value per its schema field type (CSV has no types to guess from). A row
  whose cell count differs from the header's is passed through as its raw bytes with a
  `CSV_ERROR_HEADER` saying why, to be dead-lettered. The offset is the 0-based record
  number after the header.
* Parquet (``.parquet``, ``.pq``): each row becomes a JSON object (orjson; decimals as
  floats, binary as UTF-8 text or else base64); the offset is the row number.

`FileSource.commit` writes the next offset to a checkpoint (atomically: temporary file,
fsync, rename): a worker keeps it under ``HEADRACE_HOME/checkpoints`` (option
``checkpoint_dir``), never beside the user's data; a source built without that option
writes ``<path>.<group>.offset`` beside the file. A restarted worker resumes after its
last commit; the ``start`` option replays from an offset instead. By default the end of
the file is the end of the stream: `poll` returns ``[]`` and `FileSource.exhausted`
turns true so a worker can stop; ``follow: true`` waits for appended lines instead
(JSONL and CSV), like ``tail -f``.

`FileSink` writes JSON lines (appended; `FileSink.flush` fsyncs) or Parquet (buffered;
each flush writes a row group; `FileSink.close` finalises the file). Files carry values
only: keys and headers are not written.

`probe_file` checks paths and permissions without opening anything (``headrace doctor``).
"""

from __future__ import annotations

from headrace.streams.file.formats import (
    CONTENT_TYPE_HEADER,
    CSV_CONTENT_TYPE,
    CSV_ERROR_HEADER,
    checkpoint_path,
)
from headrace.streams.file.probe import probe_file
from headrace.streams.file.sink import FileSink
from headrace.streams.file.source import FileSource

__all__ = [
    "CONTENT_TYPE_HEADER",
    "CSV_CONTENT_TYPE",
    "CSV_ERROR_HEADER",
    "FileSink",
    "FileSource",
    "checkpoint_path",
    "probe_file",
]
