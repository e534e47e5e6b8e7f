"""Safe, atomic output of received files (one implementation for the ALC/FLUTE and NORM runners).

Rules (docs/security/output.md):

* Names.  A FLUTE Content-Location (RFC 6726 §3.4.2, a URI) becomes a relative path under the
  output directory (:func:`flute_relpath`): scheme and authority dropped, the path split on
  ``/`` and each segment percent-decoded (UTF-8).  A NORM_INFO name is taken as a plain
  ``/``-separated path (:func:`plain_relpath`).  Refused (:class:`OutputError`, reason
  ``bad_name``): an empty name, a scheme-less absolute path, empty, ``.`` or ``..`` segments,
  ``\\``, NUL, C0/C1 control characters or DEL anywhere, invalid UTF-8, and a last segment
  that looks like one of our temporary names.  Refused as ``name_too_long``: a segment over
  :data:`NAME_MAX` bytes, a relative path over :data:`PATH_MAX` bytes or :data:`MAX_DEPTH`
  segments.
* Files.  Data is written to a temporary file ``.NAME.XXXXXXXX.part`` created in the final
  directory with ``O_CREAT|O_EXCL|O_NOFOLLOW`` (never through a symlink, never an existing
  file); directories under the output directory are created and opened one at a time with
  ``O_NOFOLLOW`` (a symlink or a file where a directory is needed: ``path_conflict``).  The
  file gets its final name only on :meth:`TempFile.commit`, after its length (and MD5 when
  given) were checked, by an atomic rename that never replaces an existing name
  (``renameat2(RENAME_NOREPLACE)``, else ``link`` + ``unlink``), or ``os.replace`` with
  ``overwrite=True``.  Any failure removes the temporary file.  A process killed at any
  point leaves at most a temporary name, never a partial file under a final name.
* Collisions.  A path written (or being written) earlier in the same session is never
  written again: the later object fails ``collision``, even with ``overwrite``.  A name that
  exists on disk before the session fails ``exists`` unless ``overwrite``.
* Errors.  Every failure is an :class:`OutputError` with a reason (``bad_name``,
  ``name_too_long``, ``collision``, ``exists``, ``path_conflict``, ``no_space``, ``length``,
  ``md5``, ``io``) and a one-line message; :class:`ReceivedFiles` turns it into a counted
  failure (``fail.<reason>``) and the session goes on.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
import sys
import threading
from collections import deque
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_to_bytes, urlsplit

NAME_MAX = 255  # bytes per path segment (Linux NAME_MAX)
PATH_MAX = 1024  # bytes of the whole relative path under the output directory
MAX_DEPTH = 32  # segments of the relative path
TEMP_SUFFIX = ".part"
_TEMP_HEX = 8  # random hex digits of a temporary name
TEMP_NAME_RE = re.compile(r"^\..*\.[0-9a-f]{8}\.part$", re.DOTALL)
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_O_TEMP = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class OutputError(Exception):
    """A received file could not be written; ``reason`` is the counter suffix (``fail.<reason>``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _reason(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no_space"
    if e.errno == errno.ENAMETOOLONG:
        return "name_too_long"
    if e.errno == errno.EEXIST:
        return "exists"
    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
        return "path_conflict"
    return "io"


def _os_error(e: OSError, what: str) -> OutputError:
    return OutputError(_reason(e), f"{what}: {e.strerror or e}")


# ------------------------------------------------------------------------ names


def _check_segments(segments: list[str], shown: str) -> str:
    if not segments or segments == [""]:
        raise OutputError("bad_name", f"empty name {shown}")
    if len(segments) > MAX_DEPTH:
        raise OutputError("name_too_long", f"more than {MAX_DEPTH} path segments in {shown}")
    for seg in segments:
        if seg in ("", ".", ".."):
            raise OutputError("bad_name", f"empty, '.' or '..' path segment in {shown}")
        if "/" in seg or "\\" in seg or _BAD_CHARS.search(seg):
            raise OutputError("bad_name", f"separator or control character in {shown}")
        try:
            n = len(seg.encode("utf-8"))
        except UnicodeEncodeError:
            raise OutputError("bad_name", f"not valid UTF-8: {shown}") from None
        if n > NAME_MAX:
            raise OutputError("name_too_long", f"path segment of {n} bytes (max {NAME_MAX})")
    if TEMP_NAME_RE.match(segments[-1]):
        raise OutputError("bad_name", f"looks like a temporary file name: {shown}")
    rel = "/".join(segments)
    if len(rel.encode("utf-8")) > PATH_MAX:
        raise OutputError("name_too_long", f"relative path over {PATH_MAX} bytes")
    return rel


def _shown(name: str) -> str:
    r = repr(name)
    return r if len(r) <= 80 else r[:60] + "..." + r[-16:]


def flute_relpath(location: str) -> str:
    """FLUTE Content-Location (URI) -> relative ``/``-separated path, or :class:`OutputError`.

    ``http://host/a/b%20c.bin`` -> ``a/b c.bin``; ``file:///tmp/x`` -> ``tmp/x``;
    ``dir/x.bin`` -> ``dir/x.bin``; ``/etc/passwd``, ``../x``, ``a/%2e%2e/x``, ``http://host/``
    -> ``bad_name``.  Query and fragment are dropped."""
    shown = _shown(location)
    # before urlsplit, which silently removes tab/CR/LF and strips leading controls
    if _BAD_CHARS.search(location):
        raise OutputError("bad_name", f"control character in {shown}")
    try:
        parts = urlsplit(location)
    except ValueError as e:
        raise OutputError("bad_name", f"not a URI: {shown} ({e})") from None
    path = parts.path
    if parts.scheme or parts.netloc:
        if path.startswith("/"):
            path = path[1:]  # the URI's own root is the output directory
    elif path.startswith("/"):
        raise OutputError("bad_name", f"absolute path {shown}")
    segments = []
    for raw in path.split("/"):
        try:
            segments.append(unquote_to_bytes(raw).decode("utf-8"))
        except UnicodeDecodeError:
            raise OutputError("bad_name", f"not valid UTF-8 after percent-decoding: {shown}") from None
    return _check_segments(segments, shown)


def plain_relpath(name: str) -> str:
    """A plain ``/``-separated name (NORM_INFO) -> relative path, or :class:`OutputError`
    (same rules as :func:`flute_relpath`, without URI parsing or percent-decoding)."""
    shown = _shown(name)
    if name.startswith("/"):
        raise OutputError("bad_name", f"absolute path {shown}")
    return _check_segments(name.split("/"), shown)


# ------------------------------------------------------------------------ no-replace rename

_RENAME_NOREPLACE = 1
_renameat2: Any = None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _renameat2 = _libc.renameat2
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _renameat2.restype = ctypes.c_int
except (OSError, AttributeError):  # no libc symbol (old glibc, other libc)
    _renameat2 = None


def rename_noreplace(dir_fd: int, src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` inside ``dir_fd``; ``FileExistsError`` if ``dst`` exists.

    ``renameat2(RENAME_NOREPLACE)`` (atomic); where the kernel or file system lacks it,
    ``link`` + ``unlink`` (also never replaces: ``link`` fails on an existing name)."""
    if _renameat2 is not None:
        if _renameat2(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), dst)
    os.link(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    try:
        os.unlink(src, dir_fd=dir_fd)
    except OSError:
        pass  # the file is complete under dst; a second (temporary) link to it is harmless


# ------------------------------------------------------------------------ files


def _temp_name(final: str) -> str:
    room = NAME_MAX - len(f"..{'0' * _TEMP_HEX}{TEMP_SUFFIX}")
    stem = final.encode("utf-8")[:room].decode("utf-8", "ignore")
    return f".{stem}.{secrets.token_hex(_TEMP_HEX // 2)}{TEMP_SUFFIX}"


class TempFile:
    """A file being received: lives under a temporary name until :meth:`commit`."""

    def __init__(self, owner: OutputDir, rel: str, dir_fd: int, final: str) -> None:
        self._owner = owner
        self.rel = rel
        self._dir_fd = dir_fd
        self._final = final
        self.temp_name = ""
        self.fd = -1
        for _ in range(16):
            name = _temp_name(final)
            try:
                self.fd = os.open(name, _O_TEMP, 0o666, dir_fd=dir_fd)
            except FileExistsError:
                continue
            self.temp_name = name
            break
        else:
            raise OutputError("io", f"{rel}: no free temporary name")
        self.size = 0
        self.done = False

    @property
    def temp_path(self) -> Path:
        return self._owner.root / Path(self.rel).parent / self.temp_name

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset`` (e.g. a decoded source block)."""
        view = memoryview(data).cast("B")
        try:
            pos = 0
            while pos < len(view):
                pos += os.pwrite(self.fd, view[pos:], offset + pos)
        except OSError as e:
            raise _os_error(e, f"{self.rel}: write") from None
        self.size = max(self.size, offset + len(view))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` after the furthest byte written."""
        self.write_at(self.size, data)

    def _read_md5(self) -> bytes:
        h = hashlib.md5()
        pos = 0
        while chunk := os.pread(self.fd, 1 << 20, pos):
            h.update(chunk)
            pos += len(chunk)
        return h.digest()

    def commit(self, length: int | None = None, md5: bytes | None = None) -> Path:
        """Check ``length`` and ``md5`` (of the bytes on disk), then give the file its final
        name; on any failure the temporary file is removed and :class:`OutputError` raised."""
        try:
            try:
                size = os.fstat(self.fd).st_size
                if length is not None and size != length:
                    raise OutputError("length", f"{self.rel}: {size} bytes written, {length} expected")
                if md5 is not None:
                    if self._read_md5() != md5:  # what is on disk, read back (page cache)
                        raise OutputError("md5", f"{self.rel}: MD5 of the written file differs")
                if self._owner.fsync:
                    os.fsync(self.fd)
                os.close(self.fd)
                self.fd = -1
                if self._owner.overwrite:
                    os.replace(self.temp_name, self._final, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
                else:
                    rename_noreplace(self._dir_fd, self.temp_name, self._final)
                self.done = True
                if self._owner.fsync:
                    try:
                        os.fsync(self._dir_fd)
                    except OSError:
                        pass  # the file is in place; the directory entry is best effort
            except FileExistsError:
                raise OutputError("exists", f"{self.rel}: exists (use --overwrite to replace)") from None
            except OSError as e:
                raise _os_error(e, f"{self.rel}: commit") from None
        except BaseException:
            self.abort()
            raise
        self._release(keep_claim=True)
        return self._owner.root / self.rel

    def abort(self) -> None:
        """Remove the temporary file (idempotent; never raises)."""
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        if not self.done and self.temp_name:
            try:
                os.unlink(self.temp_name, dir_fd=self._dir_fd)
            except OSError:
                pass
            self.temp_name = ""
        self._release(keep_claim=self.done)

    def _release(self, keep_claim: bool) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
        self._owner._closed(self, keep_claim)

    def __enter__(self) -> TempFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.done:
            self.abort()


class OutputDir:
    """The receive output directory: checked at construction, files written through
    :meth:`begin` / :meth:`write_file`.

    Construction raises :class:`OutputError` (reason ``config``) when the directory cannot be
    created, is not a directory or is not writable (a probe file is created and removed),
    so a configuration error stops the session before the first datagram."""

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False, fsync: bool = False) -> None:
        self.root = Path(path)
        self.overwrite = overwrite
        self.fsync = fsync
        self._claimed: set[str] = set()  # relative paths written or in progress this session
        self._open: dict[int, TempFile] = {}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise OutputError("config", f"--out {path}: exists and is not a directory") from None
        except OSError as e:
            raise OutputError("config", f"--out {path}: cannot create: {e.strerror or e}") from None
        if not self.root.is_dir():
            raise OutputError("config", f"--out {path}: not a directory")
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise OutputError("config", f"--out {path}: {e.strerror or e}") from None
        try:
            probe = _temp_name("tesla-mcast-probe")
            os.close(os.open(probe, _O_TEMP, 0o600, dir_fd=fd))
            os.unlink(probe, dir_fd=fd)
        except OSError as e:
            raise OutputError("config", f"--out {path}: not writable: {e.strerror or e}") from None
        finally:
            os.close(fd)

    def _open_parent(self, rel: str) -> tuple[int, str]:
        """Directory fd of ``rel``'s parent (created as needed, no symlink followed) and the
        last segment."""
        *dirs, final = rel.split("/")
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, d in enumerate(dirs):
                try:
                    os.mkdir(d, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                try:
                    nfd = os.open(d, _O_DIR, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise OutputError(
                            "path_conflict", f"{rel}: {'/'.join(dirs[: i + 1])} is not a directory (or is a symlink)"
                        ) from None
                    raise
                os.close(fd)
                fd = nfd
        except OSError as e:
            os.close(fd)
            raise _os_error(e, f"{rel}: directory") from None
        except BaseException:
            os.close(fd)
            raise
        return fd, final

    def begin(self, rel: str) -> TempFile:
        """Start writing the file at relative path ``rel`` (from :func:`flute_relpath` /
        :func:`plain_relpath`); raises :class:`OutputError` (``collision``, ``exists``,
        ``path_conflict``, ``name_too_long``, ``no_space``, ``io``)."""
        if rel in self._claimed:
            raise OutputError("collision", f"{rel}: already written in this session by another object")
        dir_fd, final = self._open_parent(rel)
        try:
            if not self.overwrite:
                try:
                    os.stat(final, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    pass
                else:
                    raise OutputError("exists", f"{rel}: exists (use --overwrite to replace)")
            try:
                tf = TempFile(self, rel, dir_fd, final)
            except OSError as e:
                raise _os_error(e, f"{rel}: create") from None
        except BaseException:
            os.close(dir_fd)
            raise
        self._claimed.add(rel)
        self._open[id(tf)] = tf
        return tf

    def _closed(self, tf: TempFile, keep_claim: bool) -> None:
        self._open.pop(id(tf), None)
        if not keep_claim:
            self._claimed.discard(tf.rel)

    def write_file(
        self, rel: str, data: bytes | bytearray | memoryview, *, length: int | None = None, md5: bytes | None = None
    ) -> Path:
        """Write a whole file atomically (:meth:`begin`, write, :meth:`TempFile.commit`)."""
        tf = self.begin(rel)
        with tf:
            tf.write(data)
            return tf.commit(length=length, md5=md5)

    def close(self) -> None:
        """Abort every file still in progress (removes their temporary files)."""
        for tf in list(self._open.values()):
            tf.abort()


class _Digester:
    """One background thread that updates the digests of files written block by block,
    in submission order, off the receive loop (hashlib releases the GIL on blocks of 2 KiB
    or more, so the hashing runs on another core: MD5 and SHA-256 cost about 5 ns per
    octet, a third of a receiver's work on a large file).  A job holds its block (bytes:
    the caller's bytearray or memoryview is copied, as it may be reused, unless
    ``owned``: handed over, never touched again by the caller) until hashed;
    the blocks waiting are bounded by ``max_bytes``: beyond, :meth:`submit` waits for the
    thread (back-pressure, never an unbounded queue)."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self._jobs: deque[tuple[tuple[Any, ...], bytes | bytearray | memoryview]] = deque()
        self._bytes = 0
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(
        self, hashers: tuple[Any, ...], data: bytes | bytearray | memoryview, owned: bool = False
    ) -> None:
        block = data if owned or type(data) is bytes else bytes(data)
        with self._cv:
            while self._bytes and self._bytes + len(block) > self.max_bytes:
                self._cv.wait()
            self._jobs.append((hashers, block))
            self._bytes += len(block)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="output-digests", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def wait(self, hashers: tuple[Any, ...]) -> None:
        """Until no job of ``hashers`` is waiting or running."""
        with self._cv:
            while any(h is hashers for h, _ in self._jobs) or self._busy is hashers:
                self._cv.wait()

    _busy: tuple[Any, ...] | None = None

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs:
                    if not self._cv.wait(timeout=5.0) and not self._jobs:
                        self._thread = None  # idle: a later submit starts another
                        return
                hashers, block = self._jobs.popleft()
                self._busy = hashers
            for h in hashers:
                h.update(block)
            with self._cv:
                self._bytes -= len(block)
                self._busy = None
                self._cv.notify_all()


#: the digests of every stream of the process (one thread is enough: MD5 and SHA-256
#: together run at ~200 MB/s per core, above what one receiver writes)
_DIGESTER = _Digester()


class _Stream:
    """A file written block by block: its :class:`TempFile` and MD5/SHA-256 digests updated
    while the blocks come in order (the usual case), in the background (:class:`_Digester`);
    out of order, the digests are computed at the end by reading the file back."""

    __slots__ = ("tf", "label", "record", "md5", "sha", "next", "_hashers")

    def __init__(self, tf: TempFile, label: str, record: dict[str, Any], md5: bool = True) -> None:
        self.tf = tf
        self.label = label
        self.record = record
        self.md5: Any = hashlib.md5() if md5 else None  # None: only if asked at the end
        self.sha: Any = hashlib.sha256()
        self._hashers: tuple[Any, ...] = (self.sha,) if self.md5 is None else (self.md5, self.sha)
        self.next = 0  # offset up to which the digests cover the file; -1: out of order

    def write_at(self, offset: int, data: bytes | bytearray | memoryview, owned: bool = False) -> None:
        # the write stays in the receive loop: a Python thread doing it as well would wait
        # for the GIL after each call (measured: the end of a 20 MiB transfer then waited
        # 25 ms for the thread)
        self.tf.write_at(offset, data)
        if offset == self.next:
            _DIGESTER.submit(self._hashers, data, owned)
            self.next += len(data)
        else:
            self.next = -1

    def digests(self, md5_wanted: bool = True) -> tuple[bytes | None, str]:
        """(MD5 or None when not ``md5_wanted``, SHA-256 hex) of the file's content."""
        _DIGESTER.wait(self._hashers)  # the blocks handed to the background thread
        if self.next < 0 or self.next != self.tf.size or (md5_wanted and self.md5 is None):
            md5, sha = hashlib.md5() if md5_wanted else None, hashlib.sha256()
            fd, pos = self.tf.fd, 0
            try:
                while chunk := os.pread(fd, 1 << 20, pos):
                    if md5 is not None:
                        md5.update(chunk)
                    sha.update(chunk)
                    pos += len(chunk)
            except OSError as e:
                raise _os_error(e, f"{self.tf.rel}: read back") from None
            self.md5, self.sha = md5, sha
        return (self.md5.digest() if md5_wanted else None), self.sha.hexdigest()


class ReceivedFiles:
    """Writes received objects through an :class:`OutputDir` and keeps the record the
    runners' summaries are made of: ``files`` (on disk under their final name),
    ``failures`` and ``stats`` (``fail.<reason>``).  A failure prints one line on ``err``."""

    #: files written block by block: update an MD5 while the blocks come (FLUTE's
    #: Content-MD5 is checked at commit); False (NORM: no MD5 on the wire) computes none,
    #: and a commit that still names an MD5 reads the file back for it
    stream_md5 = True

    def __init__(self, out: OutputDir, err: IO[str] | None = None) -> None:
        self.out = out
        self.err = err
        self.files: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.stats: dict[str, int] = {}
        self.delivered: set[Hashable] = set()
        self.failed: dict[Hashable, str] = {}
        self._streams: dict[Hashable, _Stream] = {}  # files being written block by block
        self._stream_failed: set[Hashable] = set()  # their write failed: later blocks ignored

    def fail(self, key: Hashable, label: str, reason: str, message: str, record: dict[str, Any]) -> None:
        self.stats[f"fail.{reason}"] = self.stats.get(f"fail.{reason}", 0) + 1
        self.failed[key] = reason
        self.failures.append({**record, "reason": reason, "error": message})
        print(f"error: {label}: not written ({reason}): {message}", file=self.err or sys.stderr)

    # -- files written block by block (files larger than memory) ---------------------------
    def block(
        self,
        key: Hashable,
        label: str,
        relpath: Callable[[], str],
        offset: int,
        data: bytes | bytearray | memoryview,
        record: dict[str, Any],
        *,
        owned: bool = False,
    ) -> None:
        """Write one decoded block of object ``key`` at ``offset`` into its temporary file
        (opened at its first block).  ``owned``: ``data`` is handed over (the caller never
        touches it again), so the digests are computed from it without a copy.  A write
        failure is counted once (``fail.<reason>``), the temporary file removed and the
        object's later blocks ignored."""
        st = self._streams.get(key)
        if st is None:
            if key in self._stream_failed:
                return
            try:
                st = self._streams[key] = _Stream(
                    self.out.begin(relpath()), label, record, md5=self.stream_md5
                )
            except OutputError as e:
                self._stream_failed.add(key)
                self.fail(key, label, e.reason, e.message, record)
                return
        try:
            st.write_at(offset, data, owned)
        except OutputError as e:
            self._stream_abort(key)
            self._stream_failed.add(key)
            self.fail(key, label, e.reason, e.message, record)

    def block_commit(
        self,
        key: Hashable,
        label: str,
        relpath: Callable[[], str],
        record: dict[str, Any],
        *,
        length: int,
        md5: bytes | None = None,
    ) -> Path | None:
        """Every block of ``key`` was written: check the length on disk and ``md5`` (computed
        as the blocks were written when they came in order, else by reading the file back),
        then give the file its final name.  The path, or None after a counted failure."""
        if key in self._stream_failed:
            self._stream_failed.discard(key)
            return None
        st = self._streams.pop(key, None)
        try:
            if st is None:  # an empty object: no block
                st = _Stream(self.out.begin(relpath()), label, record)
            digest_md5, digest_sha = st.digests(md5 is not None)
            if md5 is not None and digest_md5 != md5:
                raise OutputError("md5", f"{st.tf.rel}: MD5 of the written file differs from Content-MD5")
            path = st.tf.commit(length=length)
        except OutputError as e:
            if st is not None:
                st.tf.abort()
            self.fail(key, label, e.reason, e.message, record)
            return None
        self.delivered.add(key)
        self.failed.pop(key, None)
        self.files.append({**record, "path": str(path), "bytes": length, "sha256": digest_sha})
        return path

    def open_keys(self) -> list[Hashable]:
        """Keys of the objects being written block by block (or whose write failed)."""
        return [*self._streams, *self._stream_failed]

    def block_abort(self, key: Hashable) -> None:
        """The object failed in the engine: remove its temporary file (if any)."""
        self._stream_abort(key)
        self._stream_failed.discard(key)

    def _stream_abort(self, key: Hashable) -> None:
        st = self._streams.pop(key, None)
        if st is not None:
            st.tf.abort()

    def deliver(
        self,
        key: Hashable,
        label: str,
        relpath: Callable[[], str],
        data: bytes | bytearray | memoryview,
        record: dict[str, Any],
        *,
        length: int | None = None,
        md5: bytes | None = None,
    ) -> Path | None:
        """Write one complete, authenticated object; the path, or None after a counted failure."""
        try:
            path = self.out.write_file(relpath(), data, length=len(data) if length is None else length, md5=md5)
        except OutputError as e:
            self.fail(key, label, e.reason, e.message, record)
            return None
        self.delivered.add(key)
        self.failed.pop(key, None)
        self.files.append(
            {**record, "path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )
        return path
