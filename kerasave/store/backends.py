"""The object-store calls ``ObjectStore`` makes, per backend.

``Backend`` speaks plain fsspec (any protocol: ``memory://``, ``gs://``,
``az://``...): no conditional writes, and an object's version token is whatever
its listing gives (an ETag, a generation) or nothing. ``S3Backend`` speaks S3
through s3fs's own client (its session, credentials and endpoint): every PUT
returns its ETag, and writes can be conditional, ``If-Match: <etag>`` (replace
only the object seen) or ``If-None-Match: *`` (create only), which S3 answers
with 412 when the condition fails. s3fs's ``put_file`` offers only the second
(``mode="create"``) and returns no ETag, hence the calls here. A large file is
a multipart upload, its condition on the completion (honoured by AWS S3; moto
5.2 ignores conditions there and on copies).

Keys are fsspec paths (``bucket/folder/name``). fsspec is imported only when a
URL is used: the backends are the optional extra ``kerasave[remote]``.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from kerasave._errors import KerasaveError

__all__ = ["Obj", "Backend", "S3Backend", "Conflict", "ANY", "ABSENT", "backend_for"]

_EXTRA = "pip install 'kerasave[remote]'"
_PART = 50 * 2**20  # a multipart upload's part
_MAX_PARTS = 10_000


class Obj(NamedTuple):
    """An object as a listing shows it."""

    size: int
    etag: str | None  # its version token, when the backend gives one


class Conflict(Exception):
    """A conditional write found the object changed (HTTP 412/409)."""


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()  # write whatever is there
ABSENT = None  # write only if nothing is there


def _token(info: dict[str, Any]) -> str | None:
    for key in ("ETag", "etag", "generation", "VersionId"):
        value = info.get(key)
        if value not in (None, ""):
            return str(value)
    return None


class Backend:
    """Plain fsspec: no conditional writes (see the module's docstring)."""

    conditional = False

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def url(self, key: str) -> str:
        return str(self.fs.unstrip_protocol(key))

    def list(self, prefix: str, *, below: bool = True) -> dict[str, Obj]:
        """Every object whose key starts with ``prefix``, below it too: the parent
        folder's entries, and (``below``) what is under those that are folders."""
        parent = prefix.rsplit("/", 1)[0] if "/" in prefix else prefix
        self.fs.invalidate_cache(parent)
        try:
            entries = self.fs.ls(parent, detail=True)
        except (FileNotFoundError, OSError):
            return {}
        found: dict[str, Obj] = {}
        for entry in entries:
            key = str(entry["name"]).rstrip("/")
            if not (key + "/").startswith(prefix) and not key.startswith(prefix):
                continue
            if entry.get("type") == "directory":
                if not below:
                    continue
                try:
                    inner = self.fs.find(key, detail=True)
                except (FileNotFoundError, OSError):
                    continue
                found.update({k.rstrip("/"): Obj(int(v.get("size") or 0), _token(v))
                              for k, v in inner.items() if v.get("type", "file") == "file"})
            else:
                found[key] = Obj(int(entry.get("size") or 0), _token(entry))
        return found

    def get_bytes(self, key: str, limit: int) -> tuple[bytes, str | None] | None:
        """The object's first ``limit`` bytes and version token; None when absent."""
        self.fs.invalidate_cache(key)
        try:
            with self.fs.open(key, "rb") as f:
                data = f.read(limit)
                token = _token(getattr(f, "details", None) or {})
        except FileNotFoundError:
            return None
        return data, token

    def put_bytes(self, key: str, data: bytes, *, match: Any = ANY) -> str | None:
        self.fs.pipe_file(key, data)
        return self._token_of(key)

    def put_file(self, local: Path, key: str, *, match: Any = ANY, callback: Any = None
                 ) -> str | None:
        """Upload ``local`` to ``key``. ``match`` (or what it returns, when it is a
        callable: called just before the object is replaced) is the condition."""
        if callable(match):
            match()
        kwargs = {} if callback is None else {"callback": callback}
        self.fs.put_file(str(local), key, **kwargs)
        return self._token_of(key)

    def _token_of(self, key: str) -> str | None:
        self.fs.invalidate_cache(key)
        try:
            return _token(self.fs.info(key))
        except FileNotFoundError:
            return None

    def get_file(self, key: str, local: Path, *, callback: Any = None) -> None:
        kwargs = {} if callback is None else {"callback": callback}
        self.fs.get_file(key, str(local), **kwargs)

    def copy(self, source: str, target: str, *, size: int, match: Any = ANY) -> None:
        """A copy of ``source`` made by the store itself (only if it is still ``match``)."""
        self.fs.copy(source, target)

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if not keys:
            return
        try:
            self.fs.rm(keys)
        except FileNotFoundError:
            for key in keys:
                try:
                    self.fs.rm_file(key)
                except FileNotFoundError:
                    pass
        for key in keys:
            self.fs.invalidate_cache(key)


def _conflict(exc: BaseException) -> bool:
    """Whether ``exc`` (s3fs's translation of a ClientError) is a failed precondition."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                    409, 412):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def _condition(match: Any) -> dict[str, str]:
    if match is ANY:
        return {}
    if match is ABSENT:
        return {"IfNoneMatch": "*"}
    return {"IfMatch": str(match)}


class S3Backend(Backend):
    """S3 with conditional writes (see the module's docstring)."""

    conditional = True

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return self.fs.call_s3(method, **kwargs)
        except (OSError, ValueError) as exc:
            if _conflict(exc):
                raise Conflict(str(exc)) from exc
            raise

    def _split(self, key: str) -> tuple[str, str]:
        bucket, name, _ = self.fs.split_path(key)
        return bucket, name

    def list(self, prefix: str, *, below: bool = True) -> dict[str, Obj]:
        bucket, name = self._split(prefix)
        found: dict[str, Obj] = {}
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": name}
        if not below:  # (the folder's own objects: what is below is grouped apart)
            kwargs["Delimiter"] = "/"
        while True:
            out = self._call("list_objects_v2", **kwargs)
            for item in out.get("Contents", ()):
                found[f"{bucket}/{item['Key']}"] = Obj(int(item["Size"]), item.get("ETag"))
            if not out.get("IsTruncated"):
                return found
            kwargs["ContinuationToken"] = out["NextContinuationToken"]

    def get_bytes(self, key: str, limit: int) -> tuple[bytes, str | None] | None:
        bucket, name = self._split(key)
        try:
            out = self._call("get_object", Bucket=bucket, Key=name, Range=f"bytes=0-{limit - 1}")
        except FileNotFoundError:
            return None

        async def body() -> bytes:
            try:
                return bytes(await out["Body"].read())
            finally:
                out["Body"].close()

        from fsspec.asyn import sync

        return sync(self.fs.loop, body), out.get("ETag")

    def put_bytes(self, key: str, data: bytes, *, match: Any = ANY) -> str | None:
        bucket, name = self._split(key)
        out = self._call("put_object", Bucket=bucket, Key=name, Body=data, **_condition(match))
        self.fs.invalidate_cache(key)
        etag: str | None = out.get("ETag")
        return etag

    def put_file(self, local: Path, key: str, *, match: Any = ANY, callback: Any = None
                 ) -> str | None:
        """One PUT, or a multipart upload in parts as large as s3fs's own, sent as many
        at a time as s3fs sends them. The condition goes on the PUT or the completion;
        a callable ``match`` is called just before it (the parts are uploaded first)."""
        from fsspec.asyn import sync

        fs = self.fs
        bucket, name = self._split(key)
        size = os.path.getsize(local)
        chunk = max(_PART, -(-size // _MAX_PARTS))  # (s3fs's rule: 50 MiB, <= 10,000 parts)
        etag: str | None
        try:
            if size < min(5 * 2**30, 2 * chunk):
                body = local.read_bytes()
                condition = _condition(match() if callable(match) else match)
                out = self._call("put_object", Bucket=bucket, Key=name, Body=body, **condition)
                if callback is not None:
                    callback.relative_update(size)
                etag = out.get("ETag")
            else:
                uid = self._call("create_multipart_upload", Bucket=bucket, Key=name)["UploadId"]
                try:
                    parts = sync(fs.loop, self._parts, local, bucket, name, uid, chunk, callback)
                    condition = _condition(match() if callable(match) else match)
                    out = self._call("complete_multipart_upload", Bucket=bucket, Key=name,
                                     UploadId=uid, MultipartUpload={"Parts": parts},
                                     **condition)
                except BaseException:
                    try:
                        fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=name,
                                   UploadId=uid)
                    except Exception:
                        pass  # (an unfinished upload costs storage, not correctness)
                    raise
                etag = out.get("ETag")
        except (OSError, ValueError) as exc:
            if _conflict(exc):
                raise Conflict(str(exc)) from exc
            raise
        fs.invalidate_cache(key)
        return etag

    async def _parts(self, local: Path, bucket: str, name: str, uid: str, chunk: int,
                     callback: Any) -> builtins.list[dict[str, Any]]:
        fs = self.fs
        parts: list[dict[str, Any]] = []

        async def part(number: int, body: bytes) -> dict[str, Any]:
            out = await fs._call_s3("upload_part", Bucket=bucket, Key=name, UploadId=uid,
                                    PartNumber=number, Body=body)
            if callback is not None:
                callback.relative_update(len(body))
            return {"PartNumber": number, "ETag": out["ETag"]}

        with open(local, "rb") as f:
            while True:
                bodies = [b for b in (f.read(chunk) for _ in range(fs.max_concurrency)) if b]
                if not bodies:
                    return parts
                first = len(parts) + 1
                parts += await asyncio.gather(*(part(first + i, b)
                                                for i, b in enumerate(bodies)))

    def copy(self, source: str, target: str, *, size: int, match: Any = ANY) -> None:
        if size >= 5 * 2**30:  # (s3fs copies in parts past 5 GB, without a condition)
            self.fs.copy(source, target)
            return
        bucket, name = self._split(target)
        from_bucket, from_name = self._split(source)
        condition = {} if match is ANY or match is ABSENT else {"CopySourceIfMatch": str(match)}
        self._call("copy_object", Bucket=bucket, Key=name,
                   CopySource={"Bucket": from_bucket, "Key": from_name}, **condition)
        self.fs.invalidate_cache(target)


def backend_for(url: str) -> tuple[Backend, str]:
    """The backend of ``url`` and the URL's path in fsspec's form.

    Raises:
        KerasaveError: fsspec or the URL's backend is not installed, or fsspec
            does not know the URL.
    """
    try:
        import fsspec
    except ImportError:
        raise KerasaveError(f"a URL needs fsspec and its backends: {_EXTRA}",
                            path=url) from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise KerasaveError(f"no fsspec backend for this URL is installed ({exc}); "
                            f"{_EXTRA} installs the common ones", path=url) from None
    except ValueError as exc:
        raise KerasaveError(f"fsspec does not know this URL: {exc}", path=url) from None
    kind = Backend
    if type(fs).__name__ == "S3FileSystem" and hasattr(fs, "call_s3"):
        kind = S3Backend
    return kind(fs), path
