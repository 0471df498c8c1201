"""S3 inputs: ``s3://bucket/key`` (one object) or ``s3://bucket/prefix/`` (every object under it).

Needs boto3 (``pip install 'conveyor[s3]'``); without it an S3 input is a clear 400. The
endpoint, region and credentials come from ``CONVEYOR_S3_*`` settings, else from boto3's own
lookup (environment, config files, instance role); the client is conveyor.s3client's. A
request may bring its own credentials and region (:class:`S3Credentials`, the Modzy ``aws-s3``
input type): they are used for that request's reads only, never logged (sealed in the job
while it runs, erased when it ends); the endpoint stays the server's. Objects are read under
the per-input byte cap (``S3Source.read``: at submit, or by a worker just before the model needs
them); a prefix expands at submit to at most ``s3_max_objects_per_prefix`` objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from conveyor.errors import InputUnavailable, InvalidInput, TooLarge
from conveyor.inputs.inline import DecodedInput
from conveyor.s3client import S3Credentials, make_client
from conveyor.settings import Settings

__all__ = ["S3Credentials", "S3Source", "parse"]


def parse(address: str, label: str) -> tuple[str, str]:
    if not address.startswith("s3://"):
        raise InvalidInput(f"Input {label!r}: {address!r} is not an s3://bucket/key address.", input=label)
    bucket, _, key = address[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidInput(f"Input {label!r}: {address!r} has no bucket.", input=label)
    return bucket, key


#: S3 error codes that say the object (or its bucket) is not there.
MISSING_CODES = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})
#: S3 error codes that say "try again later" (throttling, a server-side hiccup).
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "ServiceUnavailable",
        "InternalError",
        "500",
        "502",
        "503",
        "504",
    }
)


class S3Source:
    def __init__(self, settings: Settings, credentials: S3Credentials | None = None) -> None:
        self.settings = settings
        self.max_bytes = settings.max_input_bytes
        self.client: Any = make_client(settings, credentials)

    def resolve(self, index: int, name: str | None, address: str) -> Iterator[DecodedInput]:
        label = name or address
        bucket, key = parse(address, label)
        if key == "" or key.endswith("/"):
            keys = self._expand(bucket, key, label)
            for key_name in keys:
                yield self._get(bucket, key_name, key_name.rsplit("/", 1)[-1] or key_name)
            return
        yield self._get(bucket, key, name or key.rsplit("/", 1)[-1] or f"input-{index}")

    def check_bucket(self, bucket: str, label: str) -> None:
        """The one call made at submit for a reference into ``bucket``: it exists and answers."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            reason = "no such bucket" if code in ("404", "NoSuchBucket", "NotFound") else str(exc)
            raise InputUnavailable(f"Input {label!r}: s3://{bucket}: {reason}.", input=label) from None
        except BotoCoreError as exc:
            raise InputUnavailable(
                f"Input {label!r}: cannot reach s3://{bucket}: {exc}", input=label
            ) from None

    def list_page(
        self, bucket: str, prefix: str, start_after: str | None, max_keys: int, label: str
    ) -> tuple[list[tuple[str, int]], str | None, bool]:
        """One page of ``(key, size)`` under ``prefix`` after ``start_after`` (folder markers
        skipped), the last key listed (the resume point) and whether more follow."""
        from botocore.exceptions import BotoCoreError, ClientError

        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if start_after:
            params["StartAfter"] = start_after
        try:
            page = self.client.list_objects_v2(**params)
        except (BotoCoreError, ClientError) as exc:
            raise InputUnavailable(
                f"Input {label!r}: cannot list s3://{bucket}/{prefix}: {exc}", input=label
            ) from None
        contents = page.get("Contents", [])
        last = contents[-1]["Key"] if contents else start_after
        keys = [(obj["Key"], int(obj.get("Size", 0))) for obj in contents if not obj["Key"].endswith("/")]
        return keys, last, bool(page.get("IsTruncated"))

    @contextmanager
    def lines(self, bucket: str, key: str, label: str) -> Iterator[Iterator[bytes]]:
        """The lines of one object, streamed (a manifest)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            missing = code in MISSING_CODES
            reason = "no such object" if missing else str(exc)
            raise InputUnavailable(f"Input {label!r}: s3://{bucket}/{key}: {reason}.", input=label) from None
        except BotoCoreError as exc:
            raise InputUnavailable(
                f"Input {label!r}: cannot fetch s3://{bucket}/{key}: {exc}", input=label
            ) from None
        try:
            yield body.iter_lines()
        finally:
            body.close()

    def _expand(self, bucket: str, prefix: str, label: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        keys: list[str] = []
        cap = self.settings.s3_max_objects_per_prefix
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith("/"):
                        continue  # "folder" markers
                    keys.append(obj["Key"])
                    if len(keys) > cap:
                        raise TooLarge(
                            f"Input {label!r} expands to more than {cap} objects "
                            "(CONVEYOR_S3_MAX_OBJECTS_PER_PREFIX).",
                            input=label,
                        )
        except (BotoCoreError, ClientError) as exc:
            raise InputUnavailable(
                f"Input {label!r}: cannot list s3://{bucket}/{prefix}: {exc}", input=label
            ) from None
        if not keys:
            raise InputUnavailable(f"Input {label!r}: no objects under s3://{bucket}/{prefix}.", input=label)
        return keys

    def _get(self, bucket: str, key: str, label: str) -> DecodedInput:
        return DecodedInput(label, "base64", self.read(bucket, key, label), source=f"s3://{bucket}/{key}")

    def read(self, bucket: str, key: str, label: str) -> bytes:
        """The bytes of one object under the per-input cap, in one GET. Errors name the input;
        throttling, 5xx and connection failures are marked ``transient`` (a worker retries them)."""
        from botocore.exceptions import BotoCoreError, ClientError

        address = f"s3://{bucket}/{key}"
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
            body = response["Body"]
            try:
                if int(response.get("ContentLength", 0)) > self.max_bytes:
                    raise TooLarge(
                        f"Input {label!r} is {response['ContentLength']} bytes, over the "
                        f"{self.max_bytes}-byte cap per input.",
                        input=label,
                    )
                data = body.read(self.max_bytes + 1)
            finally:
                body.close()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            missing = code in MISSING_CODES
            reason = "no such object" if missing else f"{code or status}: {error.get('Message', exc)}"
            transient = code in TRANSIENT_CODES or status == 429 or status >= 500
            raise InputUnavailable(
                f"Input {label!r}: {address}: {reason}.", input=label, status=status, transient=transient
            ) from None
        except BotoCoreError as exc:
            raise InputUnavailable(
                f"Input {label!r}: cannot fetch {address}: {exc}", input=label, transient=True
            ) from None
        if len(data) > self.max_bytes:
            raise TooLarge(f"Input {label!r} is over the {self.max_bytes}-byte cap per input.", input=label)
        return bytes(data)
