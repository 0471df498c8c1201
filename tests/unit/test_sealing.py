"""conveyor.sealing: per-job credentials sealed under the server secret, opened only with it."""

from __future__ import annotations

import pytest

from conveyor import sealing
from conveyor.errors import InvalidInput
from conveyor.inputs.s3 import S3Credentials

SECRET = "a" * 64
CREDENTIALS = S3Credentials("AKIAEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "eu-west-1")


def test_round_trip_and_the_token_hides_the_secret() -> None:
    token = sealing.seal(SECRET, CREDENTIALS.as_dict())
    assert CREDENTIALS.secret_access_key not in token and CREDENTIALS.access_key_id not in token
    assert S3Credentials.from_dict(sealing.unseal(SECRET, token)) == CREDENTIALS
    assert sealing.seal(SECRET, CREDENTIALS.as_dict()) != token  # a fresh IV each time


def test_a_wrong_secret_cannot_unseal() -> None:
    token = sealing.seal(SECRET, CREDENTIALS.as_dict())
    with pytest.raises(InvalidInput, match="cannot be opened") as caught:
        sealing.unseal("b" * 64, token)
    assert token not in caught.value.message and CREDENTIALS.secret_access_key not in caught.value.message


@pytest.mark.parametrize("spoil", [lambda t: t[:-4] + "AAAA", lambda t: t[:20], lambda t: "not a token"])
def test_an_altered_token_is_refused(spoil: object) -> None:
    token = sealing.seal(SECRET, {"k": "v"})
    assert callable(spoil)
    with pytest.raises(InvalidInput, match="cannot be opened"):
        sealing.unseal(SECRET, spoil(token))


def test_an_empty_server_secret_is_refused() -> None:
    with pytest.raises(InvalidInput, match="non-empty"):
        sealing.seal("", {"k": "v"})
