"""Sealing small secrets at rest: a JSON object encrypted and authenticated under a server secret.

A job's per-request S3 credentials (the Modzy ``aws-s3`` input) are sealed at submit into
``jobs.secret`` and unsealed by the worker that fetches the job's objects; the row is erased
when the job ends. The key is derived from the server secret with HKDF-SHA256 (so the stored
secret itself is never the encryption key) and used with Fernet (AES-128-CBC + HMAC-SHA256, a
timestamped token). A token opened with another secret, or altered, is refused.

Needs ``cryptography`` (the ``s3`` extra: ``pip install 'conveyor[s3]'``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from conveyor.errors import InvalidInput

_INFO = b"conveyor sealing v1"


#: The server secret (``server_secrets``, shared by the API and every worker) that per-job
#: credentials are sealed under.
CREDENTIALS_SECRET = "credentials"


def seal(secret: str, data: dict[str, Any]) -> str:
    """``data`` (JSON-serialisable) as an opaque token only ``unseal`` with ``secret`` opens."""
    return _fernet(secret).encrypt(json.dumps(data, separators=(",", ":")).encode()).decode("ascii")


def unseal(secret: str, token: str) -> dict[str, Any]:
    """The object sealed in ``token``; InvalidInput if ``secret`` is not the one it was sealed
    with or the token was altered (the message never includes the token)."""
    from cryptography.fernet import InvalidToken

    try:
        opened = json.loads(_fernet(secret).decrypt(token.encode("ascii")))
    except (InvalidToken, UnicodeError, ValueError):
        raise InvalidInput("Sealed data cannot be opened: wrong server secret or altered data.") from None
    if not isinstance(opened, dict):
        raise InvalidInput("Sealed data is not an object.")
    return opened


def _fernet(secret: str) -> Any:
    try:
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError:
        raise InvalidInput(
            "Per-job credentials need the cryptography package: pip install 'conveyor[s3]'."
        ) from None
    if not secret:
        raise InvalidInput("Sealing needs a non-empty server secret.")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))
