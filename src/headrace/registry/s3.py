"""The S3 artifact store: release blobs in a bucket, under an optional key prefix.

Works with AWS S3 and with S3-compatible servers (MinIO, Ceph, moto) through
``HEADRACE_S3_ENDPOINT_URL``. Timeouts are short and retries few so that a store that
cannot be reached fails within seconds with one clear line, instead of hanging a CLI
command or a worker's start-up for minutes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn, Protocol, cast
from urllib.parse import urlparse

from headrace._redact import redact_url
from headrace.errors import (
    ArtifactNotFoundError,
    ArtifactUnavailableError,
    ConfigError,
    DependencyMissingError,
)
from headrace.registry.artifacts import blob_key

__all__ = ["ENDPOINT_ENV", "S3ArtifactStore"]

ENDPOINT_ENV = "HEADRACE_S3_ENDPOINT_URL"
"""Environment variable naming an S3-compatible endpoint (e.g. ``http://127.0.0.1:9000``)."""

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_BUCKET_CODES = frozenset({"NoSuchBucket"})
_DENIED_CODES = frozenset(
    {
        "403",
        "AccessDenied",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
    }
)


class _S3Client(Protocol):
    """The slice of boto3's S3 client this store calls (keeps typing free of stubs)."""

    def head_bucket(self, *, Bucket: str) -> Any: ...  # noqa: N803 (boto3's names)

    def head_object(self, *, Bucket: str, Key: str) -> Any: ...  # noqa: N803

    def upload_file(self, Filename: str, Bucket: str, Key: str) -> None: ...  # noqa: N803

    def download_file(self, Bucket: str, Key: str, Filename: str) -> None: ...  # noqa: N803


class S3ArtifactStore:
    """Blobs in an S3 bucket, each under ``<prefix>/sha256/<ab>/<sha256>``.

    Writes are idempotent (a blob already present is not uploaded again) and atomic (S3
    makes an object visible only once its upload completed). The bucket is never created
    implicitly: a missing bucket is a configuration error that `check` reports.

    Parameters
    ----------
    bucket
        Name of an existing bucket.
    prefix
        Key prefix under which blobs live; leading and trailing ``/`` are ignored.
    endpoint_url
        S3-compatible endpoint. ``None`` reads ``HEADRACE_S3_ENDPOINT_URL`` and otherwise
        leaves the choice to boto3 (``AWS_ENDPOINT_URL`` or the AWS default for the region).
        Credentials and region always come from the standard AWS environment
        (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
        ``AWS_DEFAULT_REGION``, ...).

    Raises
    ------
    DependencyMissingError
        When boto3 is not installed (``pip install 'headrace[s3]'``).
    ConfigError
        When the bucket name is empty.
    """

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None) -> None:
        if not bucket:
            raise ConfigError(
                "S3ArtifactStore needs a bucket name: use an URL like s3://bucket/prefix "
                "in HEADRACE_ARTIFACTS."
            )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        if endpoint_url is None:
            endpoint_url = os.environ.get(ENDPOINT_ENV) or None
        self._client = _make_client(endpoint_url)

    @classmethod
    def from_url(cls, url: str) -> S3ArtifactStore:
        """Open the store an ``s3://bucket/prefix`` URL names.

        Parameters
        ----------
        url
            ``s3://bucket`` or ``s3://bucket/some/prefix``.

        Returns
        -------
        S3ArtifactStore
            A store whose endpoint and credentials come from the environment.

        Raises
        ------
        ConfigError
            When the URL is not an ``s3://`` URL with a bucket.
        """
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ConfigError(
                f"Invalid S3 artifact store URL '{redact_url(url)}': expected s3://bucket or "
                "s3://bucket/prefix (set HEADRACE_ARTIFACTS or --artifacts)."
            )
        return cls(parsed.netloc, prefix=parsed.path)

    @property
    def endpoint(self) -> str:
        """The endpoint URL boto3 resolved (custom server or the regional AWS one)."""
        return str(getattr(getattr(self._client, "meta", None), "endpoint_url", "AWS S3"))

    def key(self, sha256: str) -> str:
        """The object key of the blob `sha256` in the bucket."""
        return f"{self.prefix}/{blob_key(sha256)}" if self.prefix else blob_key(sha256)

    def put_file(self, source: Path, sha256: str) -> None:
        """Upload `source` as the blob `sha256`, unless the bucket already holds it.

        Raises
        ------
        ArtifactUnavailableError
            When the endpoint cannot be reached, the bucket is missing or access is denied.
        """
        if self.has(sha256):
            return
        key = self.key(sha256)
        try:
            self._client.upload_file(str(source), self.bucket, key)
        except Exception as exc:
            self._raise_unavailable(exc, doing=f"upload s3://{self.bucket}/{key}")

    def has(self, sha256: str) -> bool:
        """Whether the blob exists (one HEAD request).

        Raises
        ------
        ArtifactUnavailableError
            When the endpoint cannot be reached or access is denied.
        """
        key = self.key(sha256)
        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in _NOT_FOUND_CODES:
                return False
            self._raise_unavailable(exc, doing=f"look up s3://{self.bucket}/{key}")
        return True

    def get_file(self, sha256: str, dest: Path) -> None:
        """Download the blob to `dest` (parent directories are created).

        boto3 downloads to a temporary name beside `dest` and renames it when complete,
        so `dest` is never left half written.

        Raises
        ------
        ArtifactNotFoundError
            When the bucket has no such blob.
        ArtifactUnavailableError
            When the endpoint cannot be reached or access is denied.
        """
        key = self.key(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client.download_file(self.bucket, key, str(dest))
        except Exception as exc:
            if _error_code(exc) in _NOT_FOUND_CODES | _NO_BUCKET_CODES:
                raise ArtifactNotFoundError(
                    f"Blob {sha256} is missing from artifact store "
                    f"'{redact_url(self.url)}' (bucket "
                    f"'{self.bucket}', key '{key}', endpoint {self.endpoint}). Restore it "
                    "or re-register the release; `headrace doctor` checks the store."
                ) from exc
            self._raise_unavailable(exc, doing=f"download s3://{self.bucket}/{key}")

    def check(self) -> None:
        """Raise `ArtifactUnavailableError` unless the bucket exists and is accessible.

        Raises
        ------
        ArtifactUnavailableError
            One line naming the store and endpoint and what to do: when the endpoint cannot
            be reached, the bucket does not exist, or the credentials are missing or rejected.
        """
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            self._raise_unavailable(exc, doing=f"open bucket '{self.bucket}'", bucket_level=True)

    def _raise_unavailable(
        self, exc: Exception, *, doing: str, bucket_level: bool = False
    ) -> NoReturn:
        """Translate a boto3 failure into `ArtifactUnavailableError`; re-raise the unknown.

        `bucket_level` says the request addressed the bucket itself, so a bare 404 means
        the bucket, not an object, is missing.
        """
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        cause = _unwrap(exc)
        where = f"artifact store '{redact_url(self.url)}' at {self.endpoint}"
        if isinstance(cause, NoCredentialsError | PartialCredentialsError):
            hint = (
                f"no usable AWS credentials ({cause}). Set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)."
            )
        elif isinstance(cause, ClientError):
            code = _error_code(cause)
            if code in _NO_BUCKET_CODES or (bucket_level and code in _NOT_FOUND_CODES):
                hint = (
                    f"bucket '{self.bucket}' does not exist. Create it (for example "
                    f"`aws s3 mb s3://{self.bucket}`) or point HEADRACE_ARTIFACTS at an "
                    "existing bucket; headrace never creates buckets."
                )
            elif code in _DENIED_CODES:
                hint = (
                    f"access denied ({code}): the credentials were rejected or lack "
                    "permission. Check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_PROFILE "
                    "and that the bucket policy allows s3:GetObject, s3:PutObject and "
                    "s3:ListBucket."
                )
            else:
                message = cause.response.get("Error", {}).get("Message", "") or str(cause)
                hint = f"the server answered {code}: {message}."
        elif isinstance(cause, BotoCoreError):
            hint = (
                f"the endpoint cannot be reached ({cause}). Start the S3 server or fix "
                f"{ENDPOINT_ENV} / AWS_ENDPOINT_URL."
            )
        elif isinstance(cause, Boto3Error):
            hint = f"{cause}."
        else:
            raise exc
        raise ArtifactUnavailableError(f"Cannot {doing} ({where}): {hint}") from exc


def _make_client(endpoint_url: str | None) -> _S3Client:
    """An S3 client with short timeouts and few retries, from a private boto3 session."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise DependencyMissingError("boto3", "s3", "S3ArtifactStore") from exc

    config = Config(
        connect_timeout=3,
        read_timeout=30,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    # A session per store: boto3's default session is shared module state, not thread-safe.
    session = boto3.session.Session()
    client = session.client("s3", endpoint_url=endpoint_url, config=config)
    return cast("_S3Client", client)


def _unwrap(exc: BaseException) -> BaseException:
    """The botocore error behind boto3's transfer wrappers (they hide the S3 error code)."""
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError

    if isinstance(exc, RetriesExceededError):
        last = getattr(exc, "last_exception", None)  # set by boto3, missing from the stubs
        if isinstance(last, BaseException):
            return last
    if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
        return exc.__context__
    return exc


def _error_code(exc: BaseException) -> str:
    """The S3 error code of a `ClientError` (``"404"``, ``"NoSuchBucket"``), else ``""``."""
    response = getattr(_unwrap(exc), "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))
