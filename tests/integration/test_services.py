"""The service fixtures themselves work: a broken fixture would hide behind skips."""

from __future__ import annotations

import time
import uuid

import pytest

from tests_support_types import TopicFactory  # noqa: F401  (replaced below)
