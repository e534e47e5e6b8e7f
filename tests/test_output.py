"""Safe, atomic output of received files (alc/output.py, docs/security/output.md) and the
receive session's error policy (issues 14 and 15): name rules, collisions, never
overwriting, no symlink followed, I/O failures counted while the session goes on, the JSON
summary always written, nothing under a final name after SIGKILL."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import PY, rand_group

from alc.output import (
    NAME_MAX,
    TEMP_NAME_RE,
    OutputDir,
    OutputError,
    ReceivedFiles,
    flute_relpath,
    plain_relpath,
)
from alc.pcap import PcapWriter
from alc.sender import AlcSender, SenderConfig
from tesla.cli.main import main
from tesla.cli.run_norm import object_relpath

ROOT = Path(__file__).resolve().parents[1]


def _reason(fn: Any, *a: Any, **k: Any) -> str:
    with pytest.raises(OutputError) as e:
        fn(*a, **k)
    return e.value.reason


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and not p.is_symlink()}


def _temps(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if TEMP_NAME_RE.match(p.name)]


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "location,rel",
    [
        ("x.bin", "x.bin"),
        ("dirA/x.bin", "dirA/x.bin"),
        ("file:///tmp/x/y.bin", "tmp/x/y.bin"),
        ("http://example.com/a/b%20c.html", "a/b c.html"),
        ("http://example.com/a/b.html?v=2#frag", "a/b.html"),
        ("//host/only/path", "only/path"),
        ("urn:x:y", "x:y"),
        ("caf%C3%A9/%E2%82%AC.txt", "café/€.txt"),
        (".hidden", ".hidden"),
        ("a" * NAME_MAX, "a" * NAME_MAX),
    ],
)
def test_flute_relpath_keeps_paths(location: str, rel: str) -> None:
    assert flute_relpath(location) == rel


@pytest.mark.parametrize(
    "location,reason",
    [
        ("", "bad_name"),
        (".", "bad_name"),
        ("..", "bad_name"),
        ("http://host/", "bad_name"),
        ("http://host", "bad_name"),
        ("../x.bin", "bad_name"),
        ("../../etc/passwd", "bad_name"),
        ("a/../../b", "bad_name"),
        ("a/%2e%2e/%2E%2E/b", "bad_name"),
        ("/etc/passwd", "bad_name"),
        ("http://host//etc/passwd", "bad_name"),
        ("a//b", "bad_name"),
        ("dir/", "bad_name"),
        ("a/./b", "bad_name"),
        ("a%2Fb", "bad_name"),
        ("a\\..\\b", "bad_name"),
        ("x%00.bin", "bad_name"),
        ("x\x00.bin", "bad_name"),
        ("x\n.bin", "bad_name"),
        ("\tx.bin", "bad_name"),
        ("x%1b.bin", "bad_name"),
        ("x\x7f", "bad_name"),
        ("x%C2%85y", "bad_name"),  # C1 control (NEL)
        ("%ff%fe.bin", "bad_name"),  # not UTF-8
        ("http://[::1/x", "bad_name"),  # not a URI
        (".x.bin.0123abcd.part", "bad_name"),  # would look like our temporary files
        ("a" * (NAME_MAX + 1), "name_too_long"),
        ("x" * 10_000, "name_too_long"),
        ("/".join(["d" * 200] * 6), "name_too_long"),
        ("/".join(["d"] * 40), "name_too_long"),
    ],
)
def test_flute_relpath_refuses(location: str, reason: str) -> None:
    assert _reason(flute_relpath, location) == reason


def test_plain_relpath_is_not_a_uri() -> None:
    assert plain_relpath("dir/a%20b") == "dir/a%20b"  # NORM_INFO: no percent-decoding
    assert plain_relpath("http:x") == "http:x"
    for bad in ("", "/abs", "../x", "a/../x", "a\x00b", "a\\b", "a//b"):
        assert _reason(plain_relpath, bad) == "bad_name"


def test_norm_object_names() -> None:
    assert object_relpath(b"sub/f.bin\x00junk", 1, 2, 3) == "sub/f.bin"
    assert object_relpath(None, 7, 2, 3) == "norm-object-7-2-3"
    assert object_relpath(b"", 7, 2, 3) == "norm-object-7-2-3"
    assert _reason(object_relpath, b"../../x", 1, 2, 3) == "bad_name"
    assert _reason(object_relpath, b"\xff\xfe", 1, 2, 3) == "bad_name"


# ----------------------------------------------------------------------------- writer


def test_nested_paths_kept_and_no_temporary_left(tmp_path: Path) -> None:
    out = OutputDir(tmp_path / "out")
    p1 = out.write_file("dirA/x.bin", b"A")
    p2 = out.write_file("dirB/sub/x.bin", b"BB")
    assert p1 == tmp_path / "out/dirA/x.bin" and p2 == tmp_path / "out/dirB/sub/x.bin"
    assert _tree(tmp_path / "out") == {"dirA/x.bin": b"A", "dirB/sub/x.bin": b"BB"}


def test_collision_in_one_session_never_overwrites(tmp_path: Path) -> None:
    for overwrite in (False, True):
        d = tmp_path / f"o{overwrite}"
        out = OutputDir(d, overwrite=overwrite)
        out.write_file("x.bin", b"first")
        assert _reason(out.write_file, "x.bin", b"second") == "collision"
        assert (d / "x.bin").read_bytes() == b"first"
        assert not _temps(d)


def test_collision_with_a_file_in_progress(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    tf = out.begin("x.bin")
    assert _reason(out.begin, "x.bin") == "collision"
    tf.abort()  # an aborted file frees its name
    assert out.write_file("x.bin", b"2") == tmp_path / "x.bin"


def test_existing_file_not_overwritten_unless_overwrite(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"old")
    assert _reason(OutputDir(tmp_path).write_file, "x.bin", b"new") == "exists"
    assert (tmp_path / "x.bin").read_bytes() == b"old"
    assert not _temps(tmp_path)
    OutputDir(tmp_path, overwrite=True).write_file("x.bin", b"new")
    assert (tmp_path / "x.bin").read_bytes() == b"new"


def test_commit_never_replaces_a_name_created_meanwhile(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    tf = out.begin("x.bin")
    tf.write(b"ours")
    (tmp_path / "x.bin").write_bytes(b"theirs")  # another process, after begin()
    with pytest.raises(OutputError) as e:
        tf.commit()
    assert e.value.reason == "exists"
    assert (tmp_path / "x.bin").read_bytes() == b"theirs" and not _temps(tmp_path)


def test_rename_fallback_link_unlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without renameat2 the no-replace rename is link + unlink: same guarantees."""
    import alc.output as o

    monkeypatch.setattr(o, "_renameat2", None)
    out = OutputDir(tmp_path)
    out.write_file("a.bin", b"1")
    (tmp_path / "b.bin").write_bytes(b"old")
    tf = out.begin("c.bin")
    tf.write(b"x")
    (tmp_path / "c.bin").write_bytes(b"theirs")
    assert _reason(tf.commit) == "exists"
    assert _tree(tmp_path) == {"a.bin": b"1", "b.bin": b"old", "c.bin": b"theirs"}


def test_symlinks_never_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(b"precious")
    d = tmp_path / "out"
    d.mkdir()
    # the old fixed temporary name, and our temporary name guessed in advance
    (d / "x.bin.part").symlink_to(victim)
    import alc.output as o

    out = OutputDir(d)
    tokens = iter(["deadbeef"])  # then random again
    monkeypatch.setattr(o.secrets, "token_hex", lambda n: next(tokens, None) or os.urandom(n).hex())
    (d / ".x.bin.deadbeef.part").symlink_to(victim)
    out.write_file("x.bin", b"data")
    assert (d / "x.bin").read_bytes() == b"data" and not (d / "x.bin").is_symlink()
    # a symlink under the final name is an existing name: not replaced, not followed
    (d / "y.bin").symlink_to(victim)
    assert _reason(out.write_file, "y.bin", b"data") == "exists"
    # a symlinked directory inside --out is not entered
    (d / "sub").symlink_to(outside, target_is_directory=True)
    assert _reason(out.write_file, "sub/z.bin", b"data") == "path_conflict"
    # with --overwrite the symlink itself is replaced, its target untouched
    OutputDir(d, overwrite=True).write_file("y.bin", b"new")
    assert (d / "y.bin").read_bytes() == b"new" and not (d / "y.bin").is_symlink()
    assert victim.read_bytes() == b"precious" and sorted(os.listdir(outside)) == ["victim"]


def test_file_where_a_directory_is_needed(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    out.write_file("a", b"file")
    assert _reason(out.write_file, "a/b.bin", b"x") == "path_conflict"
    assert _tree(tmp_path) == {"a": b"file"}


def test_length_and_md5_checked_before_the_final_name(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    data = os.urandom(5000)
    assert _reason(out.write_file, "short.bin", data, length=5001) == "length"
    assert _reason(out.write_file, "bad.bin", data, md5=hashlib.md5(b"x").digest()) == "md5"
    out.write_file("ok.bin", data, length=5000, md5=hashlib.md5(data).digest())
    assert _tree(tmp_path) == {"ok.bin": data}


def test_blocks_written_at_offsets(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    data = os.urandom(10_000)
    tf = out.begin("blocks.bin")
    for off in (6000, 0, 3000):  # out of order
        tf.write_at(off, data[off : off + 3000] if off < 6000 else data[off:])
    assert not (tmp_path / "blocks.bin").exists() and tf.temp_path.exists()
    tf.commit(length=len(data), md5=hashlib.md5(data).digest())
    assert (tmp_path / "blocks.bin").read_bytes() == data


def test_no_space_fails_that_file_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC (and EIO) injected through the writer: the file fails, its temporary file is
    removed, the next file is written."""
    real = os.pwrite
    calls = {"n": 0}

    def pwrite(fd: int, data: Any, off: int) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if calls["n"] == 3:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd, data, off)

    monkeypatch.setattr(os, "pwrite", pwrite)
    sink = ReceivedFiles(OutputDir(tmp_path))
    assert sink.deliver(1, "one", lambda: "one.bin", b"1", {"toi": 1}) is not None
    assert sink.deliver(2, "two", lambda: "two.bin", b"2", {"toi": 2}) is None
    assert sink.deliver(3, "three", lambda: "three.bin", b"3", {"toi": 3}) is None
    assert sink.deliver(4, "four", lambda: "d/four.bin", b"4", {"toi": 4}) is not None
    assert _tree(tmp_path) == {"one.bin": b"1", "d/four.bin": b"4"}
    assert sink.stats == {"fail.no_space": 1, "fail.io": 1}
    assert [f["reason"] for f in sink.failures] == ["no_space", "io"]
    assert sink.delivered == {1, 4} and sink.failed == {2: "no_space", 3: "io"}


def test_os_name_too_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system with a NAME_MAX below 255 (ENAMETOOLONG from the OS): counted
    name_too_long, nothing left behind."""
    out = OutputDir(tmp_path)
    real_open = os.open

    def short_names(path: Any, flags: int, *a: Any, **k: Any) -> int:
        if flags & os.O_CREAT and len(os.fsencode(path)) > 143:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", short_names)
    sink = ReceivedFiles(out)
    assert sink.deliver(1, "long", lambda: "d/" + "n" * 200, b"x", {}) is None
    assert sink.deliver(2, "short", lambda: "d/" + "n" * 100, b"y", {}) is not None
    assert sink.stats == {"fail.name_too_long": 1}
    assert _tree(tmp_path) == {"d/" + "n" * 100: b"y"}


def test_failure_message_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sink = ReceivedFiles(OutputDir(tmp_path))
    sink.deliver(9, "TOI 9 'x'", lambda: flute_relpath("a\nb/../" + "z" * 10_000), b"", {"toi": 9})
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: TOI 9 'x': not written (bad_name)")
    assert len(err) < 300


def test_output_dir_configuration_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_bytes(b"")
    assert _reason(OutputDir, tmp_path / "f") == "config"
    assert _reason(OutputDir, tmp_path / "f" / "sub") == "config"
    # not writable (injected: the tests may run as root): the probe file cannot be created
    real_open = os.open

    def ro_open(path: Any, flags: int, *a: Any, **k: Any) -> int:
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", ro_open)
    with pytest.raises(OutputError) as e:
        OutputDir(tmp_path / "ro")
    assert e.value.reason == "config" and "not writable" in e.value.message


def test_sigkill_while_writing_leaves_only_a_temporary_name(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from alc.output import OutputDir
        tf = OutputDir({str(tmp_path)!r}).begin("dir/big.bin")
        tf.write(b"x" * (1 << 20))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=60)
    assert r.returncode == -signal.SIGKILL
    names = [p.name for p in (tmp_path / "dir").iterdir()]
    assert len(names) == 1 and TEMP_NAME_RE.match(names[0]) and names[0].startswith(".big.bin.")


def test_close_aborts_files_in_progress(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    tf = out.begin("a.bin")
    tf.write(b"partial")
    out.close()
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- CLI (ALC)


def _flute_pcap(path: Path, group: str, files: dict[str, bytes], tsi: int = 5) -> None:
    """A --no-auth FLUTE capture of ``files`` (Content-Location -> bytes)."""
    addr, port = group.split(":")
    s = AlcSender(SenderConfig(tsi=tsi, rate_bps=None))
    for name, data in files.items():
        s.add_bytes(data, name)
    now = 1_700_000_000.0
    with PcapWriter(path) as w:
        for pkt in s.all_packets(now):
            w.write(now, ("127.0.0.1", 4000), (addr, int(port)), pkt)
            now += 1e-5


def _receive(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    rc = main(["receive", "--no-auth", "--json", *args])
    cap = capsys.readouterr()
    return rc, json.loads(cap.out), cap.err


HOSTILE = {
    "dirA/x.bin": b"A" * 3000,
    "dirB/x.bin": b"B" * 4000,
    "../evil.bin": b"E",
    "http://host/": b"H",
    ".": b"D",
    "": b"N",
    "n" * 10_000: b"L",
    "ok.bin": b"ok",
}


def test_cli_hostile_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: dirA/x.bin and dirB/x.bin became one file while both were reported delivered;
    `.`, `..`, `` and `http://host/` became `unnamed`; the 10,000-character name ended the
    session with a traceback and no summary."""
    group = rand_group()
    pcap = tmp_path / "h.pcap"
    _flute_pcap(pcap, group, HOSTILE)
    out = tmp_path / "work" / "out"
    rc, s, err = _receive(["--group", group, "--out", str(out), "--from-pcap", str(pcap)], capsys)
    assert rc == 1 and not s["complete"]
    assert _tree(tmp_path / "work") == {"out/dirA/x.bin": b"A" * 3000, "out/dirB/x.bin": b"B" * 4000, "out/ok.bin": b"ok"}
    assert sorted(Path(f["path"]).relative_to(out).as_posix() for f in s["files"]) == ["dirA/x.bin", "dirB/x.bin", "ok.bin"]
    assert s["announced"] == 8 and s["received"] == 3
    assert sorted(m["reason"] for m in s["missing"]) == ["bad_name"] * 4 + ["name_too_long"]
    assert s["stats"]["fail.bad_name"] == 4 and s["stats"]["fail.name_too_long"] == 1
    assert "Traceback" not in err and err.count("not written (bad_name)") == 4
    assert not (tmp_path / "evil.bin").exists() and not (tmp_path / "work" / "evil.bin").exists()


def test_cli_existing_file_kept_unless_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    group = rand_group()
    pcap = tmp_path / "e.pcap"
    _flute_pcap(pcap, group, {"a.bin": b"new-a", "sub/b.bin": b"new-b"})
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "b.bin").write_bytes(b"old")
    base = ["--group", group, "--out", str(out), "--from-pcap", str(pcap)]
    rc, s, err = _receive(base, capsys)
    assert rc == 1 and not s["complete"] and s["received"] == 1
    assert s["missing"] == [{"toi": 2, "name": "sub/b.bin", "reason": "exists"}]
    assert s["stats"]["fail.exists"] == 1 and "--overwrite" in err
    assert _tree(out) == {"a.bin": b"new-a", "sub/b.bin": b"old"}
    (out / "a.bin").unlink()
    rc, s, err = _receive([*base, "--overwrite"], capsys)
    assert rc == 0 and s["complete"] and s["received"] == 2, err
    assert _tree(out) == {"a.bin": b"new-a", "sub/b.bin": b"new-b"}


def test_cli_symlink_part_not_followed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a symlink named NAME.part in --out was followed (its target overwritten)."""
    group = rand_group()
    pcap = tmp_path / "s.pcap"
    _flute_pcap(pcap, group, {"x.bin": b"payload"})
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.bin.part").symlink_to(victim)
    rc, s, err = _receive(["--group", group, "--out", str(out), "--from-pcap", str(pcap)], capsys)
    assert rc == 0 and s["complete"], err
    assert victim.read_bytes() == b"precious"
    assert (out / "x.bin").read_bytes() == b"payload" and not (out / "x.bin").is_symlink()


def test_cli_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    group = rand_group()
    pcap = tmp_path / "p.pcap"
    _flute_pcap(pcap, group, {"a.bin": b"a"})
    (tmp_path / "f").write_bytes(b"")
    for out in (tmp_path / "f", tmp_path / "f" / "sub"):
        rc = main(["receive", "--no-auth", "--group", group, "--out", str(out), "--from-pcap", str(pcap)])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: --out") and err.count("\n") == 1, err


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_cli_configuration_errors_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], protocol: str) -> None:
    """Bad --group, unknown --iface, missing capture: exit 2, one line, no traceback."""
    base = ["receive", "--protocol", protocol, "--no-auth", "--out", str(tmp_path / "o"), "--timeout", "0.1"]
    for extra, msg in (
        (["--group", "nonsense"], "error: --group nonsense:"),
        (["--group", rand_group(), "--iface", "nosuch0"], "error: cannot receive on"),
        (["--group", rand_group(), "--from-pcap", str(tmp_path / "none.pcap")], "no such file"),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err


def test_cli_internal_error_still_writes_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception escaping an engine (a bug, e.g. issue 15's IndexError) stops the session
    with a one-line message; files already written stay, the summary is printed."""
    from alc.receiver import AlcReceiver

    group = rand_group()
    pcap = tmp_path / "p.pcap"
    files = {"a.bin": b"a" * 100, "b.bin": os.urandom(200_000)}
    _flute_pcap(pcap, group, files)
    real = AlcReceiver.receive_datagram
    seen = {"n": 0}

    def boom(self: AlcReceiver, data: bytes, addr: Any, now: float) -> None:
        seen["n"] += 1
        if seen["n"] == 40:
            raise IndexError("index 144 is out of bounds")
        real(self, data, addr, now)

    def boom_batch(self: AlcReceiver, datagrams: Any, addrs: Any, times: Any) -> None:
        for k, d in enumerate(datagrams):  # the batch entry, one datagram at a time
            boom(self, d, addrs[k], float(times[k]))

    monkeypatch.setattr(AlcReceiver, "receive_datagram", boom)
    monkeypatch.setattr(AlcReceiver, "receive_datagrams", boom_batch)
    out = tmp_path / "out"
    rc, s, err = _receive(["--group", group, "--out", str(out), "--from-pcap", str(pcap)], capsys)
    assert rc == 1 and not s["complete"]
    assert s["stopped"].startswith("internal error: IndexError: index 144")
    assert "Traceback" not in err and "error: receive stopped: internal error" in err
    assert _tree(out) == {"a.bin": files["a.bin"]} and not _temps(out)


# ----------------------------------------------------------------------------- live processes


def _unshare_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return r.returncode == 0


needs_mount = pytest.mark.skipif(not _unshare_ok(), reason="cannot mount a tmpfs in a user+mount namespace")


def _in_tmpfs(mnt: Path, opts: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``tesla-mcast ARGV`` in a private mount namespace with a tmpfs (``opts``) on ``mnt``."""
    cmd = f'mount -t tmpfs -o {opts} tmpfs "$1" && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", cmd, "sh", str(mnt), *PY, *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


@needs_mount
def test_live_disk_full_fails_one_file_session_goes_on(tmp_path: Path) -> None:
    """Before: ENOSPC ended the session with a traceback, a .part file left, no summary and
    the remaining files never written."""
    group = rand_group()
    pcap = tmp_path / "p.pcap"
    files = {"first.bin": os.urandom(2000), "big.bin": os.urandom(600_000), "last.bin": os.urandom(3000)}
    _flute_pcap(pcap, group, files)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = _in_tmpfs(
        mnt, "size=256k",
        ["receive", "--no-auth", "--json", "--group", group, "--out", str(mnt / "out"), "--from-pcap", str(pcap)],
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    s = json.loads(r.stdout)
    assert sorted(Path(f["path"]).name for f in s["files"]) == ["first.bin", "last.bin"]
    assert s["missing"] == [{"toi": 2, "name": "big.bin", "reason": "no_space"}]
    assert s["stats"]["fail.no_space"] == 1
    assert "big.bin" in r.stderr and "not written (no_space)" in r.stderr


@needs_mount
def test_live_read_only_out_refused_at_start(tmp_path: Path) -> None:
    """Before: a read-only --out was found only when the first file completed (traceback)."""
    group = rand_group()
    pcap = tmp_path / "p.pcap"
    _flute_pcap(pcap, group, {"a.bin": b"a"})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = _in_tmpfs(
        mnt, "ro",
        ["receive", "--no-auth", "--json", "--group", group, "--out", str(mnt), "--from-pcap", str(pcap)],
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"error: --out {mnt}: not writable") and r.stderr.count("\n") == 1, r.stderr


def _live_receiver(out: Path, group: str, extra: list[str] = ()) -> subprocess.Popen[str]:  # type: ignore[assignment]
    return subprocess.Popen(
        PY + ["receive", "--no-auth", "--group", group, "--iface", "127.0.0.1", "--out", str(out),
              "--tsi", "77", "--timeout", "60", "--json", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _live_sender(files: list[Path], group: str, rate: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        PY + ["send", "--no-auth", *map(str, files), "--group", group, "--iface", "127.0.0.1",
              "--rate", rate, "--tsi", "77", "-q"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "SIGINT"])
def test_live_receiver_killed_mid_transfer(tmp_path: Path, sig: int) -> None:
    """`tesla-mcast receive` killed while a large file is in flight: nothing under a final
    name; with SIGTERM or SIGINT the JSON summary is still written and no temporary file is
    left (before: SIGTERM ended the process with no summary)."""
    inp = tmp_path / "in"
    inp.mkdir()
    small = inp / "small.bin"
    small.write_bytes(os.urandom(1000))
    big = inp / "big.bin"
    big.write_bytes(os.urandom(12_000_000))
    group = rand_group()
    out = tmp_path / "out"
    rx = _live_receiver(out, group)
    tx = None
    try:
        time.sleep(1.0)  # join
        tx = _live_sender([big, small], group, "20M")  # big first: ~5 s in flight
        time.sleep(2.5)
        assert rx.poll() is None and tx.poll() is None
        rx.send_signal(sig)
        stdout, stderr = rx.communicate(timeout=30)
    finally:
        for p in (rx, tx):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert rx.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 1), stderr
    left = os.listdir(out)
    assert "big.bin" not in left and "small.bin" not in left
    assert all(TEMP_NAME_RE.match(n) for n in left), left
    if sig != signal.SIGKILL:
        s = json.loads(stdout)
        assert s["stopped"] == "interrupted" and not s["complete"] and s["files"] == []
        assert s["stats"]["packets"] > 100  # it was receiving the big file
        assert left == [] and "Traceback" not in stderr


# ----------------------------------------------------------------------------- CLI (NORM)


def _norm_pcap(path: Path, group: str, objects: list[tuple[bytes, bytes | None]]) -> None:
    """A --no-auth NORM capture: each (data, NORM_INFO) enqueued as a FILE-like data object."""
    from norm.sender import NormSender, NormSenderConfig

    addr, port = group.split(":")
    s = NormSender(NormSenderConfig(node_id=1, segment_size=1000, block_size=16, num_parity=0, rate=1e9))
    for data, info in objects:
        s.enqueue_data(data, info)
    s.end()
    now = 1_700_000_000.0
    end = now + 30
    with PcapWriter(path) as w:
        while now < end:
            for pkt, _dst in s.datagrams_to_send(now):
                w.write(now, ("127.0.0.1", 4000), (addr, int(port)), pkt)
            t = s.get_timer()
            now = max(now + 1e-4, t if t is not None else now + 0.05)
            s.handle_timer(now)


def test_cli_norm_names_and_collisions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """NORM objects: the NORM_INFO name under the same rules (nested kept, `../` refused,
    a second object with the same name fails `collision`), else norm-object-S-I-O."""
    group = rand_group()
    pcap = tmp_path / "n.pcap"
    objs = [
        (b"1" * 1500, b"d/one.bin"),
        (b"2" * 10, b"../escape.bin"),
        (b"3" * 20, b"d/one.bin"),
        (b"4" * 30, None),
    ]
    _norm_pcap(pcap, group, objs)
    out = tmp_path / "out"
    rc = main(["receive", "--protocol", "norm", "--no-auth", "--json", "--group", group, "--out", str(out),
               "--from-pcap", str(pcap)])
    cap = capsys.readouterr()
    s = json.loads(cap.out)
    assert rc == 1 and not s["complete"], cap.err
    tree = _tree(out)
    assert tree.pop("d/one.bin") == b"1" * 1500
    (default_name, data), = tree.items()
    assert data == b"4" * 30 and default_name.startswith("norm-object-1-")
    assert sorted(f["reason"] for f in s["failures"]) == ["bad_name", "collision"]
    assert s["stats"]["fail.bad_name"] == 1 and s["stats"]["fail.collision"] == 1
    assert not (tmp_path / "escape.bin").exists() and "Traceback" not in cap.err


def test_stream_md5_only_where_wanted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sink with ``stream_md5 = False`` (NORM: no MD5 on the wire) updates no MD5 while
    blocks are written (90 ms of a 20 MiB receive); a commit that still names an MD5 reads
    the file back for it, so a wrong one is still refused.  The default sink (FLUTE's
    Content-MD5) keeps computing it as the blocks come."""
    from alc.output import ReceivedFiles
    from tesla.cli.run_norm import NormFileSink

    data = os.urandom(10_000)
    calls = []
    real_md5 = hashlib.md5

    def counting_md5(*a: Any, **k: Any) -> Any:
        calls.append(1)
        return real_md5(*a, **k)

    monkeypatch.setattr("alc.output.hashlib.md5", counting_md5)
    assert NormFileSink.stream_md5 is False and ReceivedFiles.stream_md5 is True
    for cls, md5_calls in ((NormFileSink, 0), (ReceivedFiles, 1)):
        calls.clear()
        sink = cls(OutputDir(tmp_path / cls.__name__))
        for off in (0, 4000, 8000):
            sink.block("k", "f", lambda: "f.bin", off, data[off : off + 4000], {})
        assert sink.block_commit("k", "f", lambda: "f.bin", {}, length=len(data)) is not None
        assert len(calls) == md5_calls
        assert sink.files[0]["sha256"] == hashlib.sha256(data).hexdigest()
        sink.block("j", "g", lambda: "g.bin", 0, data, {})
        assert sink.block_commit("j", "g", lambda: "g.bin", {}, length=len(data), md5=b"x" * 16) is None
        assert sink.failures[-1]["reason"] == "md5"
        sink.block("i", "h", lambda: "h.bin", 0, data, {})
        assert sink.block_commit("i", "h", lambda: "h.bin", {}, length=len(data), md5=real_md5(data).digest())


def test_stream_digests_in_the_background_equal_hashlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks written in order are hashed by the background digester: a bytearray the
    caller reuses right after ``block`` does not change the digests (the job holds a copy),
    the waiting blocks stay under the digester's bound (back-pressure with a 10 kB bound),
    and the digests at commit equal hashlib's of the whole file, MD5 checked as before."""
    from alc import output as O

    dig = O._Digester(max_bytes=10_000)
    monkeypatch.setattr(O, "_DIGESTER", dig)
    peak = [0]
    real_submit = dig.submit

    def submit(h: Any, data: Any, owned: bool = False) -> None:
        real_submit(h, data, owned)
        peak[0] = max(peak[0], dig._bytes)

    monkeypatch.setattr(dig, "submit", submit)
    data = os.urandom(200_000)
    sink = ReceivedFiles(OutputDir(tmp_path))
    buf = bytearray(4000)
    for off in range(0, len(data), 4000):
        buf[:] = data[off : off + 4000]
        sink.block("k", "f", lambda: "f.bin", off, buf, {})
        buf[:] = b"\0" * 4000  # reused by the caller at once
    md5 = hashlib.md5(data).digest()
    assert sink.block_commit("k", "f", lambda: "f.bin", {}, length=len(data), md5=md5) is not None
    assert sink.files[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "f.bin").read_bytes() == data
    assert 0 < peak[0] <= 10_000
    # a wrong Content-MD5 is still refused
    sink.block("j", "g", lambda: "g.bin", 0, data[:9000], {})
    assert sink.block_commit("j", "g", lambda: "g.bin", {}, length=9000, md5=md5) is None
    assert sink.failures[-1]["reason"] == "md5"


def test_stream_owned_blocks_are_hashed_without_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block handed over (``owned``: an engine's BlockReceived buffer) goes to the
    digester as it is; one the caller may reuse is copied first.  Digests and file are
    the same either way."""
    from alc import output as O

    dig = O._Digester()
    monkeypatch.setattr(O, "_DIGESTER", dig)
    queued: list[Any] = []
    real_submit = dig.submit

    def submit(h: Any, data: Any, owned: bool = False) -> None:
        real_submit(h, data, owned)
        queued.append(dig._jobs[-1][1] if dig._jobs else None)

    monkeypatch.setattr(dig, "submit", submit)
    data = os.urandom(300_000)
    sink = ReceivedFiles(OutputDir(tmp_path))
    blocks = [bytearray(data[off : off + 100_000]) for off in range(0, len(data), 100_000)]
    gate = threading.Lock()
    with gate:  # the digester thread waits on the first hash: the jobs stay queued
        monkeypatch.setattr(dig, "_run", _gated(dig._run, gate))
        sink.block("k", "f", lambda: "f.bin", 0, blocks[0], {}, owned=True)
        sink.block("k", "f", lambda: "f.bin", 100_000, blocks[1], {})
        sink.block("k", "f", lambda: "f.bin", 200_000, blocks[2], {}, owned=True)
        assert queued[0] is blocks[0] and queued[2] is blocks[2]
        assert type(queued[1]) is bytes and queued[1] == blocks[1]
    md5 = hashlib.md5(data).digest()
    assert sink.block_commit("k", "f", lambda: "f.bin", {}, length=len(data), md5=md5) is not None
    assert sink.files[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "f.bin").read_bytes() == data


def _gated(run: Any, gate: threading.Lock) -> Any:
    def gated() -> None:
        with gate:
            pass
        run()

    return gated
