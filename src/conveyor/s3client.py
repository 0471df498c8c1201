"""The one way Conveyor builds a boto3 S3 client (S3 inputs, the S3 blob store).

boto3 is optional (``pip install 'conveyor[s3]'``) and imported on first use. The endpoint,
region and credentials come from ``CONVEYOR_S3_*`` settings, else from boto3's own lookup
(environment, config files, instance role). A request may bring its own credentials and region
(:class:`S3Credentials`, the Modzy ``aws-s3`` input type); the endpoint stays the server's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import InvalidInput
from conveyor.settings import Settings


@dataclass(frozen=True)
class S3Credentials:
    """Credentials (and region) given with one request; the secret is kept out of ``repr``."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """The form sealed into a job's ``secret`` (``conveyor.sealing``)."""
        return {
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "region": self.region,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> S3Credentials:
        return cls(str(data["access_key_id"]), str(data["secret_access_key"]), data.get("region") or None)


def make_client(settings: Settings, credentials: S3Credentials | None = None) -> Any:
    """A boto3 S3 client with the server's endpoint and timeouts (400 when boto3 is missing)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise InvalidInput("S3 needs boto3 on the server: pip install 'conveyor[s3]'.", kind="s3") from None
    key_id: str | None
    secret: str | None
    if credentials is not None:
        key_id, secret = credentials.access_key_id, credentials.secret_access_key
        region = credentials.region or settings.s3_region
    else:
        key_id, secret = settings.s3_access_key_id, settings.s3_secret_access_key
        region = settings.s3_region
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(
            connect_timeout=settings.url_timeout_seconds,
            read_timeout=settings.url_timeout_seconds,
            retries={"max_attempts": 2},
        ),
    )
