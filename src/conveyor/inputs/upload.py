"""File uploads: a ``multipart/form-data`` body streamed to temporary files on disk.

The body is parsed as it arrives (python-multipart's push parser over the request stream), so
a file is never held in memory and a request goes over a cap the moment its bytes do: each
file has ``max_input_bytes``, all files together ``max_job_bytes``, the whole body
``max_request_bytes`` (also when sent chunked, without a Content-Length). The staged files
live in a private directory under the data dir that is removed when the request ends,
whatever happens. Client file names are only names: they are sanitised and never used as paths.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from conveyor.errors import ConveyorError, InvalidInput, TooLarge

MAX_NAME = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class StagedFile:
    """One uploaded file, on disk until the request ends."""

    name: str
    path: Path
    size: int
    content_type: str | None = None


@dataclass
class Upload:
    """What a multipart body carried: its text fields and its files, in order."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[StagedFile] = field(default_factory=list)


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_total_bytes: int
    max_request_bytes: int
    max_field_bytes: int
    max_files: int


def sanitize_filename(raw: str, fallback: str) -> str:
    """The last path component of a client's file name, without control characters.

    ``../../etc/passwd`` becomes ``passwd`` and ``C:\\x\\y.png`` becomes ``y.png``; nothing
    is ever written under this name, it only labels the item.
    """
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = _CONTROL.sub("", name).strip()
    if name in ("", ".", ".."):
        return fallback
    return name[:MAX_NAME]


class _Receiver:
    """Turns the parser's callbacks into fields and staged files, enforcing the caps."""

    def __init__(self, directory: Path, limits: UploadLimits) -> None:
        self.directory = directory
        self.limits = limits
        self.upload = Upload()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._field_name: str | None = None
        self._field_value = bytearray()
        self._file: IO[bytes] | None = None
        self._file_name = ""
        self._file_path: Path | None = None
        self._file_type: str | None = None
        self._file_size = 0
        self._total_file_bytes = 0

    # python-multipart callbacks (they must not be async; disk writes are small and sequential)
    def on_part_begin(self) -> None:
        self._headers = {}
        self._field_name = None
        self._field_value = bytearray()
        self._file = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise InvalidInput("A multipart part has no Content-Disposition header.")
        _, options = parse_options_header(disposition)
        name = options.get(b"name")
        if name is None:
            raise InvalidInput("A multipart part has no field name.")
        self._field_name = name.decode("utf-8", "replace")
        if b"filename" not in options:
            return
        index = len(self.upload.files)
        if index >= self.limits.max_files:
            raise TooLarge(f"More than {self.limits.max_files} files in one upload.")
        self._file_name = sanitize_filename(
            options[b"filename"].decode("utf-8", "replace"), fallback=f"upload-{index}"
        )
        content_type = self._headers.get(b"content-type")
        self._file_type = content_type.decode("latin-1") if content_type else None
        handle, path = tempfile.mkstemp(dir=self.directory, prefix=f"{index:06d}-")
        self._file = open(handle, "wb")  # noqa: SIM115 -- closed in on_part_end or close()
        self._file_path = Path(path)
        self._file_size = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self._file is not None:
            self._file_size += size
            self._total_file_bytes += size
            if self._file_size > self.limits.max_file_bytes:
                raise TooLarge(
                    f"File {self._file_name!r} is over the {self.limits.max_file_bytes}-byte cap per input.",
                    input=self._file_name,
                )
            if self._total_file_bytes > self.limits.max_total_bytes:
                raise TooLarge(f"The uploaded files exceed the cap of {self.limits.max_total_bytes} bytes.")
            self._file.write(data[start:end])
            return
        self._field_value += data[start:end]
        if len(self._field_value) > self.limits.max_field_bytes:
            raise TooLarge(
                f"Form field {self._field_name!r} is over the {self.limits.max_field_bytes}-byte cap.",
                field=self._field_name,
            )

    def on_part_end(self) -> None:
        if self._file is not None and self._file_path is not None:
            self._file.close()
            self._file = None
            self.upload.files.append(
                StagedFile(self._file_name, self._file_path, self._file_size, self._file_type)
            )
            return
        if self._field_name is not None:
            try:
                self.upload.fields[self._field_name] = self._field_value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"Form field {self._field_name!r} is not UTF-8 text.") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }


@contextlib.asynccontextmanager
async def receive_upload(request: Request, tmp_root: Path, limits: UploadLimits) -> AsyncIterator[Upload]:
    """Parse ``request``'s multipart body into an :class:`Upload`; its files vanish on exit."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidInput("Send the upload as multipart/form-data (with a boundary).")
    tmp_root.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="upload-", dir=tmp_root))
    receiver = _Receiver(directory, limits)
    try:
        parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limits.max_request_bytes:
                raise TooLarge(f"Request body over the {limits.max_request_bytes}-byte cap.")
            try:
                parser.write(chunk)
            except (ConveyorError, OSError):  # OSError: writing the part to disk (e.g. disk full: 507)
                raise
            except Exception as exc:  # python-multipart's parse errors
                raise InvalidInput(f"Malformed multipart body: {exc}") from None
        try:
            parser.finalize()
        except (ConveyorError, OSError):
            raise
        except Exception as exc:
            raise InvalidInput(f"Malformed multipart body: {exc}") from None
        receiver.close()
        yield receiver.upload
    finally:
        receiver.close()
        shutil.rmtree(directory, ignore_errors=True)
