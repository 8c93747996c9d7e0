"""Where files live: local paths, or keys of an S3 bucket (``s3://bucket/key``), behind one
small path type, so that pools, score directories, subsets, targets and reports can be in a
bucket with no shared file system.

* :func:`location` turns what a user gives (a path, or an ``s3://`` URL with optional
  ``storage_options``) into a :class:`pathlib.Path` or an :class:`S3Path`. An ``S3Path`` carries
  its resolved options (endpoint, region, credentials, timeouts), a plain dict that travels to
  Ray tasks with the units.
* Options come from, in order: ``storage_options`` (the Python API), the ``AWS_*`` environment
  variables (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ALLOW_HTTP``) and the profile
  (``AWS_PROFILE``, default ``default``) of ``~/.aws/config`` and ``~/.aws/credentials``; every
  request is bounded (``timeout``, ``max_retries``), so an endpoint that never answers is an
  error, not a hang.
* Parquet is read by Polars' own cloud I/O (the options are its ``storage_options``) and
  written locally, then uploaded whole (one PUT, below); listing, small files, ranged reads
  and conditional writes go through obstore (the same Rust ``object_store`` engine, one
  wheel, a sync API, ``If-None-Match`` writes: see the README's design section).
* On a bucket an object appears whole or not at all: every file is one PUT (or one multipart
  upload, visible only when completed); write-once records use ``If-None-Match: *``.
"""

from __future__ import annotations

import configparser
import io
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from datetime import timedelta
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, Union

import polars as pl

from polars_curate._errors import first_line
from polars_curate._types import PathLike

__all__ = [
    "Loc",
    "S3Path",
    "StorageError",
    "local_copy",
    "location",
    "open_read",
    "parquet_footer",
    "parquet_kv_metadata",
    "parquet_schema",
    "polars_options",
    "read_parquet",
    "s3_options",
    "scan_parquet",
    "size_and_tail",
]

#: Bounds on every request, unless the options say otherwise: a dead endpoint fails in seconds.
TIMEOUTS = {"timeout": "60s", "connect_timeout": "10s", "max_retries": "2"}
_ENV = {
    "AWS_ENDPOINT_URL": "aws_endpoint_url",
    "AWS_ENDPOINT_URL_S3": "aws_endpoint_url",
    "AWS_REGION": "aws_region",
    "AWS_DEFAULT_REGION": "aws_region",
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "AWS_ALLOW_HTTP": "aws_allow_http",
}


_PROFILE_KEYS = (
    "endpoint_url",
    "region",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
)


class StorageError(OSError):
    """A bucket that cannot be reached or read as asked; the message names the URL."""


def _profile() -> dict[str, str]:
    """Endpoint, region and keys of the AWS profile in ``~/.aws/config`` and credentials."""
    name = os.environ.get("AWS_PROFILE", "default")
    out: dict[str, str] = {}
    files = [
        (os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"), f"profile {name}"),
        (os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), name),
    ]
    for path, section in files:
        cp = configparser.ConfigParser()
        cp.read(os.path.expanduser(path))
        for sec in (section, name):
            if cp.has_section(sec):
                for k in _PROFILE_KEYS:
                    if cp.has_option(sec, k):
                        out.setdefault(k if k.startswith("aws_") else f"aws_{k}", cp.get(sec, k))
    return out


def s3_options(user: dict[str, Any] | None = None) -> dict[str, str]:
    """The options of a bucket's requests: ``user`` first, then ``AWS_*``, then the profile,
    then the bounds of :data:`TIMEOUTS` (see the module docs). One plain dict, for Polars'
    ``storage_options`` and for obstore."""
    opts = {str(k): str(v) for k, v in (user or {}).items()}
    for var, key in _ENV.items():
        if var in os.environ:
            opts.setdefault(key, os.environ[var])
    for key, value in _profile().items():
        opts.setdefault(key, value)
    for key, value in TIMEOUTS.items():
        opts.setdefault(key, value)
    if opts.get("aws_endpoint_url", "").startswith("http://"):
        opts.setdefault("aws_allow_http", "true")
    return opts


def polars_options(p: Path | S3Path) -> dict[str, Any] | None:
    """Polars' ``storage_options`` for ``p`` (``None`` for a local path)."""
    if not isinstance(p, S3Path):
        return None
    opts: dict[str, Any] = dict(p.options)
    opts["max_retries"] = int(opts["max_retries"])  # Polars wants an integer there
    return opts


def obstore() -> Any:
    """The ``obstore`` module (an optional dependency: ``pip install "polars-curate[s3]"``)."""
    try:
        import obstore as obs
    except ImportError:
        raise ImportError('s3:// needs obstore: pip install "polars-curate[s3]"') from None
    return obs


@cache
def _store(bucket: str, frozen: tuple[tuple[str, str], ...]) -> Any:
    obstore()
    from obstore.store import S3Store

    opts = dict(frozen)
    client = {k: opts[k] for k in ("timeout", "connect_timeout") if k in opts}
    client["allow_http"] = opts.get("aws_allow_http", "false").lower() == "true"
    config = {k: v for k, v in opts.items() if k.startswith("aws_") and k != "aws_allow_http"}
    retry = {"max_retries": int(opts.get("max_retries", 2)), "retry_timeout": timedelta(seconds=30)}
    return S3Store(bucket, config=config, client_options=client, retry_config=retry)


class S3Path:
    """A key (or a prefix, for a directory) of an S3 bucket, with the options to reach it; the
    few ``pathlib`` operations this package uses."""

    def __init__(self, url: str, options: dict[str, str]) -> None:
        rest = url.split("://", 1)[1]
        self.bucket, _, key = rest.partition("/")
        self.key = key.strip("/")
        self.options = options
        if not self.bucket:
            raise ValueError(f"{url}: no bucket in the URL")

    # -- names
    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def __repr__(self) -> str:
        return f"S3Path({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, S3Path) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: S3Path) -> bool:
        return str(self) < str(other)

    def __truediv__(self, name: str) -> S3Path:
        return S3Path(f"{self}/{name}", self.options)

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]

    @property
    def suffix(self) -> str:
        n = self.name
        return n[n.rindex(".") :] if "." in n.lstrip(".") else ""

    @property
    def stem(self) -> str:
        return self.name[: len(self.name) - len(self.suffix)]

    @property
    def parent(self) -> S3Path:
        return S3Path(f"s3://{self.bucket}/{self.key.rpartition('/')[0]}", self.options)

    @property
    def parents(self) -> list[S3Path]:
        out, p = [], self
        while p.key:
            p = p.parent
            out.append(p)
        return out

    def with_name(self, name: str) -> S3Path:
        return self.parent / name

    def with_suffix(self, suffix: str) -> S3Path:
        return self.parent / (self.stem + suffix)

    def resolve(self) -> S3Path:
        return self

    def absolute(self) -> S3Path:
        return self

    def expanduser(self) -> S3Path:
        return self

    def is_symlink(self) -> bool:
        return False

    # -- the bucket
    @property
    def store(self) -> Any:
        return _store(self.bucket, tuple(sorted(self.options.items())))

    def _call(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return f(self.store, *args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise StorageError(f"{self}: {first_line(e)}") from None

    def head(self) -> dict[str, Any] | None:
        """``{"size", "e_tag"}`` of the object, or ``None`` when there is none."""
        obs = obstore()

        try:
            return self._call(obs.head, self.key)
        except FileNotFoundError:
            return None

    def is_file(self) -> bool:
        return bool(self.key) and self.head() is not None

    def _listing(self) -> dict[str, Any]:
        obs = obstore()

        try:
            return self._call(obs.list_with_delimiter, self.key + "/" if self.key else None)
        except FileNotFoundError as e:
            raise StorageError(f"{self}: {first_line(e)}") from None

    def is_dir(self) -> bool:
        got = self._listing()
        return bool(got["objects"] or got["common_prefixes"])

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def iterdir(self) -> Iterator[S3Path]:
        got = self._listing()
        for o in got["objects"]:
            yield S3Path(f"s3://{self.bucket}/{o['path']}", self.options)
        for prefix in got["common_prefixes"]:
            yield S3Path(f"s3://{self.bucket}/{prefix}", self.options)

    def glob(self, pattern: str) -> Iterator[S3Path]:
        """The objects directly under this prefix whose names match ``pattern``."""
        if "/" in pattern:
            raise ValueError(f"{self}: only patterns within one prefix are supported")
        got = self._listing()
        for o in got["objects"]:
            p = S3Path(f"s3://{self.bucket}/{o['path']}", self.options)
            if fnmatch(p.name, pattern):
                yield p

    def read_bytes(self) -> bytes:
        obs = obstore()

        try:
            return bytes(self._call(obs.get, self.key).bytes())
        except FileNotFoundError:
            raise FileNotFoundError(f"{self}: no such object") from None

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def read_range(self, start: int, end: int, e_tag: str | None = None) -> bytes:
        obs = obstore()

        options: dict[str, Any] = {"range": (start, end)}
        if e_tag is not None:
            options["if_match"] = e_tag
        return bytes(self._call(obs.get, self.key, options=options).bytes())

    def open(self) -> BinaryIO:
        """A seekable reader: ranged GETs pinned to the object's ETag (a replaced object is an
        error, never a mix of two versions)."""
        meta = self.head()
        if meta is None:
            raise FileNotFoundError(f"{self}: no such object")
        raw = _RangedFile(self, int(meta["size"]), meta.get("e_tag"))
        return io.BufferedReader(raw, buffer_size=1 << 20)  # type: ignore[return-value]

    def put(self, data: bytes | BinaryIO | Path, *, create: bool = False) -> None:
        """One PUT (or one multipart upload for a large local file: visible once complete);
        ``create``: only if no object is there (``If-None-Match: *``; ``FileExistsError``)."""
        obs = obstore()
        from obstore.exceptions import AlreadyExistsError

        multipart = isinstance(data, Path) and data.stat().st_size > 4 << 30
        mode = "create" if create else "overwrite"
        try:
            self._call(obs.put, self.key, data, mode=mode, use_multipart=multipart)
        except AlreadyExistsError:
            raise FileExistsError(str(self)) from None
        except StorageError as e:
            if create and "already exists" in str(e).lower():
                raise FileExistsError(str(self)) from None
            raise

    def unlink(self, missing_ok: bool = False) -> None:
        obs = obstore()

        try:
            self._call(obs.delete, self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise


class _RangedFile(io.RawIOBase):
    """A seekable read-only file over one object; each read one ranged GET (If-Match)."""

    def __init__(self, path: S3Path, size: int, e_tag: str | None) -> None:
        self.path, self.size, self.e_tag, self.pos = path, size, e_tag, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.size - self.pos)
        if n <= 0:
            return 0
        data = self.path.read_range(self.pos, self.pos + n, self.e_tag)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


def location(p: PathLike | S3Path, storage_options: dict[str, Any] | None = None) -> Path | S3Path:
    """``p`` as a local :class:`~pathlib.Path` or an :class:`S3Path` (``s3://`` URLs, with
    ``storage_options`` and the environment's options). Other schemes are refused by name."""
    if isinstance(p, (S3Path, Path)):
        return p
    text = os.fspath(p)
    if text.startswith("s3://"):
        return S3Path(text, s3_options(storage_options))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise ValueError(f"{text}: only local paths and s3:// URLs are supported")
    return Path(text)


def located(x: Any, storage_options: dict[str, Any] | None = None) -> Any:
    """``x`` as a :func:`location` when it names a file (a path or a URL), else unchanged (an
    array or a Series given as data): how a target or centroids argument meets the options."""
    return location(x, storage_options) if isinstance(x, (str, os.PathLike)) else x


#: A file's place: a local path or a key of a bucket.
Loc = Union[Path, S3Path]


def open_read(p: Loc) -> BinaryIO:
    """A seekable binary reader of ``p``."""
    return p.open() if isinstance(p, S3Path) else open(p, "rb")


def scan_parquet(paths: Sequence[Loc], **kwargs: Any) -> pl.LazyFrame:
    """``pl.scan_parquet`` of local files or objects (all of one kind), with their options."""
    paths = list(paths)
    opts = polars_options(paths[0]) if paths else None
    return pl.scan_parquet([str(p) for p in paths], storage_options=opts, **kwargs)


def read_parquet(p: Loc, **kwargs: Any) -> pl.DataFrame:
    return pl.read_parquet(str(p), storage_options=polars_options(p), **kwargs)


def parquet_schema(p: Loc) -> dict[str, pl.DataType]:
    if isinstance(p, S3Path):
        return dict(scan_parquet([p]).collect_schema())
    return dict(pl.read_parquet_schema(p))


def parquet_kv_metadata(p: Loc) -> dict[str, str]:
    """A Parquet file's key-value metadata."""
    return pl.read_parquet_metadata(str(p), storage_options=polars_options(p))


def parquet_footer(p: Loc) -> Any:
    """pyarrow's ``FileMetaData`` (row groups) of a Parquet file."""
    import pyarrow.parquet as pq

    if isinstance(p, S3Path):
        with p.open() as f:
            return pq.read_metadata(f)
    return pq.read_metadata(p)


#: Bytes of a file's tail that its fingerprint hashes: the Parquet footer, the zip directory.
TAIL = 64 << 10


def size_and_tail(p: Loc) -> tuple[int, bytes]:
    """A file's size and its last :data:`TAIL` bytes (one ranged GET on a bucket)."""
    if isinstance(p, S3Path):
        meta = p.head()
        if meta is None:
            raise FileNotFoundError(f"{p}: no such object")
        size = int(meta["size"])
        return size, p.read_range(max(0, size - TAIL), size, meta.get("e_tag")) if size else b""
    size = p.stat().st_size
    with open(p, "rb") as f:
        f.seek(max(0, size - TAIL))
        return size, f.read()


def local_copy(p: Loc, directory: str | None = None) -> tuple[Path, Any]:
    """``p`` itself when local; an object downloaded (in 16 MiB pieces) to a temporary file,
    and the handle that removes it when dropped."""
    if not isinstance(p, S3Path):
        return p, None
    tmp = tempfile.NamedTemporaryFile(prefix=".polars-curate-", suffix=p.suffix, dir=directory)
    with p.open() as f:
        while block := f.read(16 << 20):
            tmp.write(block)
    tmp.flush()
    return Path(tmp.name), tmp
