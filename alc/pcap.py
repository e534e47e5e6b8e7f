"""Capture reading (classic pcap and pcapng), writing and replay into a sans-I/O engine.

* :func:`read_udp` yields ``UdpDatagram(ts, src, dst, payload)`` from a classic pcap file
  (both byte orders, micro- and nanosecond magic) or a pcapng file (the default format of
  Wireshark and tshark: several sections and interfaces, any ``if_tsresol`` and
  ``if_tsoffset``; Enhanced, Simple and obsolete Packet Blocks) with link types Ethernet (1, with
  802.1Q tags), Linux SLL (113), Linux SLL2 (276), raw IP (12, 14, 101, 228), and BSD
  null/loopback (0); IPv4 and IPv6 carrying UDP.  Non-first IP fragments are skipped
  (counted in the reader's ``stats``).  Optional filters on destination address/port.
* :class:`PcapWriter` writes Ethernet/IPv4/UDP records (zero MACs) so a sender's output
  can be recorded (``tesla-mcast send --pcap OUT``) and dissected by tshark.
* :func:`replay` feeds a capture into any :class:`alc.engine.Engine`, using the capture
  timestamps as ``now`` and firing the engine's timers in capture time.

Plain :mod:`struct`, no scapy: a million-packet capture replays in seconds.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from alc.engine import Address, Engine, count
from alc.errors import DecodeError

#: pcapng Section Header Block type (the same in both byte orders)
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
#: a pcapng block larger than this is refused (a packet block holds at most a 256 KiB
#: snapshot in practice; this only stops a corrupt length from allocating gigabytes)
MAX_PCAPNG_BLOCK = 16 << 20
MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_GHDR = struct.Struct("IHHiIII")
_REC = struct.Struct("IIII")
_UDP = struct.Struct("!HHHH")


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    ts: float
    src: Address
    dst: Address
    payload: bytes


@dataclass
class PcapReader:
    """Iterate UDP datagrams of a classic pcap file (see module docstring)."""

    path: str | Path
    dst_addr: str | None = None
    dst_port: int | None = None
    src_addr: str | None = None
    stats: dict[str, int] = field(default_factory=dict)

    def __iter__(self) -> Iterator[UdpDatagram]:
        with open(self.path, "rb") as f:
            yield from self._iter(f)

    def _accept(self, ts: float, frame: bytes, linktype: int) -> UdpDatagram | None:
        stats = self.stats
        count(stats, "frames")
        parsed = _parse_frame(frame, linktype, stats)
        if parsed is None:
            return None
        src, dst, payload = parsed
        if self.dst_port is not None and dst[1] != self.dst_port:
            return None
        if self.dst_addr is not None and dst[0] != self.dst_addr:
            return None
        if self.src_addr is not None and src[0] != self.src_addr:
            return None
        count(stats, "udp")
        return UdpDatagram(ts, src, dst, payload)

    def _iter(self, f: BinaryIO) -> Iterator[UdpDatagram]:
        head = f.read(24)
        if head[:4] == PCAPNG_SHB:
            yield from self._iter_ng(f, head)
            return
        if len(head) < 24:
            raise DecodeError("pcap.header", "file shorter than the 24-octet global header")
        (magic,) = struct.unpack("<I", head[:4])
        if magic in (MAGIC_US, MAGIC_NS):
            endian = "<"
        else:
            (magic,) = struct.unpack(">I", head[:4])
            if magic not in (MAGIC_US, MAGIC_NS):
                raise DecodeError(
                    "pcap.magic", f"neither a pcap nor a pcapng file (magic {head[:4].hex()})"
                )
            endian = ">"
        tsdiv = 1e9 if magic == MAGIC_NS else 1e6
        _, _, _, _, _, _, linktype = struct.unpack(endian + "IHHiIII", head)
        rec = struct.Struct(endian + "IIII")
        stats = self.stats
        while True:
            rh = f.read(16)
            if len(rh) < 16:
                if rh:
                    count(stats, "drop.truncated_record")
                return
            sec, frac, incl, _orig = rec.unpack(rh)
            frame = f.read(incl)
            if len(frame) < incl:
                count(stats, "drop.truncated_record")
                return
            d = self._accept(sec + frac / tsdiv, frame, linktype)
            if d is not None:
                yield d

    def _iter_ng(self, f: BinaryIO, head: bytes) -> Iterator[UdpDatagram]:
        """pcapng (draft-ietf-opsawg-pcapng): blocks of ``type, total length, body,
        total length``; each Section Header Block sets the byte order and starts a new
        list of interfaces (link type, timestamp resolution and offset)."""
        stats = self.stats
        buf = head
        endian = "<"
        ifaces: list[tuple[int, float, int]] = []  # (linktype, seconds per tick, offset s)
        while True:
            if len(buf) < 8:
                buf += f.read(8 - len(buf))
                if len(buf) < 8:
                    if buf:
                        count(stats, "drop.truncated_record")
                    return
            btype = buf[:4]
            if btype == PCAPNG_SHB:
                if len(buf) < 12:
                    buf += f.read(12 - len(buf))
                if len(buf) < 12:
                    count(stats, "drop.truncated_record")
                    return
                bom = buf[8:12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    endian = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    endian = ">"
                else:
                    raise DecodeError("pcapng.byte_order_magic", bom.hex())
                ifaces = []
            (btype_n, blen) = struct.unpack(endian + "II", buf[:8])
            if blen < 12 or blen % 4 or blen > MAX_PCAPNG_BLOCK:
                raise DecodeError("pcapng.block_total_length", f"{blen} (block type {btype_n:#x})")
            block = buf + f.read(blen - len(buf))
            body = block[8 : blen - 4]
            buf = b""
            if len(block) != blen:
                count(stats, "drop.truncated_record")
                return
            if btype_n == 1:  # Interface Description Block
                if len(body) < 8:
                    raise DecodeError("pcapng.idb", "shorter than 8 octets")
                linktype = struct.unpack_from(endian + "H", body, 0)[0]
                tick, offset = 1e-6, 0
                for code, val in _ng_options(body, 8, endian):
                    if code == 9 and val:  # if_tsresol
                        v = val[0]
                        tick = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
                    elif code == 14 and len(val) >= 8:  # if_tsoffset, seconds
                        offset = struct.unpack_from(endian + "q", val)[0]
                ifaces.append((linktype, tick, offset))
            elif btype_n in (6, 2):  # Enhanced Packet Block, obsolete Packet Block
                if btype_n == 6:
                    if len(body) < 20:
                        raise DecodeError("pcapng.epb", "shorter than 20 octets")
                    iid, th, tl, caplen, _orig = struct.unpack_from(endian + "IIIII", body)
                else:
                    if len(body) < 20:
                        raise DecodeError("pcapng.pb", "shorter than 20 octets")
                    iid, _drops, th, tl, caplen, _orig = struct.unpack_from(
                        endian + "HHIIII", body
                    )
                if iid >= len(ifaces):
                    raise DecodeError("pcapng.interface_id", f"{iid} of {len(ifaces)} interfaces")
                if 20 + caplen > len(body):
                    raise DecodeError("pcapng.captured_length", f"{caplen} > block body")
                linktype, tick, offset = ifaces[iid]
                d = self._accept(((th << 32) | tl) * tick + offset, body[20 : 20 + caplen], linktype)
                if d is not None:
                    yield d
            elif btype_n == 3:  # Simple Packet Block: interface 0, no timestamp
                if not ifaces or len(body) < 4:
                    raise DecodeError("pcapng.spb", "no interface or shorter than 4 octets")
                (orig,) = struct.unpack_from(endian + "I", body)
                frame = body[4 : 4 + min(orig, len(body) - 4)]
                count(stats, "spb_without_timestamp")
                d = self._accept(0.0, frame, ifaces[0][0])
                if d is not None:
                    yield d
            # other blocks (name resolution, statistics, custom, ...) carry no packets


def _ng_options(body: bytes, pos: int, endian: str) -> Iterator[tuple[int, bytes]]:
    """The options of a pcapng block body from ``pos`` (code, value), up to opt_endofopt."""
    hdr = struct.Struct(endian + "HH")
    while pos + 4 <= len(body):
        code, ln = hdr.unpack_from(body, pos)
        if code == 0:
            return
        val = body[pos + 4 : pos + 4 + ln]
        if len(val) < ln:
            return
        yield code, val
        pos += 4 + ((ln + 3) & ~3)


def read_udp(
    path: str | Path,
    dst_addr: str | None = None,
    dst_port: int | None = None,
    src_addr: str | None = None,
) -> Iterator[UdpDatagram]:
    """UDP datagrams of a pcap or pcapng capture, optionally filtered by destination /
    source."""
    return iter(PcapReader(path, dst_addr, dst_port, src_addr))


#: link layers with a fixed header: linktype -> (header length, offset of the ethertype)
_LINK_HEADERS = {
    LINKTYPE_ETHERNET: (14, 12),
    LINKTYPE_LINUX_SLL: (16, 14),
    LINKTYPE_LINUX_SLL2: (20, 0),
}


def _parse_frame(
    frame: bytes, linktype: int, stats: dict[str, int]
) -> tuple[Address, Address, bytes] | None:
    off = 0
    ethertype: int | None = None
    link = _LINK_HEADERS.get(linktype)
    if link is not None:
        off, at = link
        if len(frame) < off:
            count(stats, "drop.short_frame")
            return None
        ethertype = int.from_bytes(frame[at : at + 2], "big")
        if linktype == LINKTYPE_ETHERNET:
            while ethertype in (0x8100, 0x88A8) and len(frame) >= off + 4:
                ethertype = int.from_bytes(frame[off + 2 : off + 4], "big")
                off += 4
    elif linktype in (LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6):
        off = 0
    elif linktype == LINKTYPE_NULL:
        if len(frame) < 4:
            count(stats, "drop.short_frame")
            return None
        fam = struct.unpack("<I", frame[:4])[0]
        if fam > 0xFFFF:
            fam = struct.unpack(">I", frame[:4])[0]
        ethertype = 0x0800 if fam == 2 else 0x86DD
        off = 4
    else:
        count(stats, "drop.linktype")
        return None
    if ethertype is not None and ethertype not in (0x0800, 0x86DD):
        count(stats, "drop.not_ip")
        return None
    if len(frame) <= off:
        count(stats, "drop.short_frame")
        return None
    version = frame[off] >> 4
    if version == 4:
        if len(frame) < off + 20:
            count(stats, "drop.short_frame")
            return None
        ihl = (frame[off] & 0x0F) * 4
        total = int.from_bytes(frame[off + 2 : off + 4], "big")
        if frame[off + 9] != 17:
            count(stats, "drop.not_udp")
            return None
        frag = int.from_bytes(frame[off + 6 : off + 8], "big")
        if frag & 0x1FFF or frag & 0x2000:
            count(stats, "drop.ip_fragment")
            return None
        src_ip = ipaddress.IPv4Address(frame[off + 12 : off + 16]).compressed
        dst_ip = ipaddress.IPv4Address(frame[off + 16 : off + 20]).compressed
        end = off + total if total else len(frame)
        udp = off + ihl
    elif version == 6:
        if len(frame) < off + 40:
            count(stats, "drop.short_frame")
            return None
        if frame[off + 6] != 17:
            count(stats, "drop.not_udp")
            return None
        plen = int.from_bytes(frame[off + 4 : off + 6], "big")
        src_ip = ipaddress.IPv6Address(frame[off + 8 : off + 24]).compressed
        dst_ip = ipaddress.IPv6Address(frame[off + 24 : off + 40]).compressed
        udp = off + 40
        end = udp + plen
    else:
        count(stats, "drop.not_ip")
        return None
    if len(frame) < udp + 8:
        count(stats, "drop.short_frame")
        return None
    sport, dport, ulen, _ = _UDP.unpack_from(frame, udp)
    end = min(end, len(frame), udp + ulen if ulen >= 8 else len(frame))
    return (src_ip, sport), (dst_ip, dport), frame[udp + 8 : end]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


class PcapWriter:
    """Write UDP datagrams (IPv4 or IPv6, by the addresses given) as Ethernet frames
    (zero MACs) to a classic pcap file."""

    def __init__(self, path: str | Path, snaplen: int = 262144) -> None:
        self._f: BinaryIO = open(path, "wb")  # noqa: SIM115
        self._f.write(_GHDR.pack(MAGIC_US, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        self._ident = 0
        self.count = 0

    def write(self, ts: float, src: Address, dst: Address, payload: bytes) -> None:
        udp_len = 8 + len(payload)
        dip_a = ipaddress.ip_address(dst[0])
        if dip_a.version == 6:
            sip6 = ipaddress.IPv6Address(src[0]).packed
            # UDP over IPv6 must carry a checksum (RFC 8200 §8.1)
            pseudo = sip6 + dip_a.packed + struct.pack("!I3xB", udp_len, 17)
            csum = _checksum(pseudo + _UDP.pack(src[1], dst[1], udp_len, 0) + payload) or 0xFFFF
            udph = _UDP.pack(src[1], dst[1], udp_len, csum)
            iph = struct.pack("!IHBB", 6 << 28, udp_len, 17, 1) + sip6 + dip_a.packed
            frame = b"\0" * 12 + b"\x86\xdd" + iph + udph + payload
        else:
            total = 20 + udp_len
            self._ident = (self._ident + 1) & 0xFFFF
            sip = ipaddress.IPv4Address(src[0]).packed
            dip = dip_a.packed
            iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, self._ident, 0x4000, 1, 17, 0, sip, dip)
            iph = iph[:10] + struct.pack("!H", _checksum(iph)) + iph[12:]
            udph = _UDP.pack(src[1], dst[1], udp_len, 0)
            frame = b"\0" * 12 + b"\x08\x00" + iph + udph + payload
        sec = int(ts)
        usec = int(round((ts - sec) * 1e6))
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        self._f.write(_REC.pack(sec, usec, len(frame), len(frame)))
        self._f.write(frame)
        self.count += 1

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: a replay batch spans at most this much capture time and this many datagrams
REPLAY_BATCH_SPAN = 0.002
REPLAY_BATCH_MAX = 64


def replay(
    engine: Engine,
    path: str | Path,
    dst_addr: str | None = None,
    dst_port: int | None = None,
    src_addr: str | None = None,
    until: Callable[[], bool] | None = None,
    drain_timers: bool = True,
) -> float | None:
    """Feed the UDP datagrams of a capture into ``engine`` with capture timestamps as
    arrival times, through its batch entry ``receive_datagrams`` (as a socket driver
    does: up to :data:`REPLAY_BATCH_MAX` datagrams spanning at most
    :data:`REPLAY_BATCH_SPAN` s of capture time per call).

    Timers the engine asks for are fired in capture time: a batch never reaches past the
    engine's deadline, and every deadline <= a datagram's timestamp fires before it.
    ``until`` stops early when it returns True.  With ``drain_timers`` the remaining
    timers are fired after the last datagram (time then jumps to each deadline), so
    object/session timeouts resolve.  Returns the last ``now``.
    """
    now: float | None = None
    data: list[bytes] = []
    addrs: list[Address | None] = []
    times: list[float] = []
    limit = 0.0

    def flush() -> None:
        if data:
            engine.receive_datagrams(data, addrs, times)
            data.clear()
            addrs.clear()
            times.clear()

    def fire(upto: float) -> None:
        t = engine.get_timer()
        while t is not None and t <= upto:
            engine.handle_timer(t)
            nt = engine.get_timer()
            if nt is not None and nt <= t:
                break
            t = nt

    for d in read_udp(path, dst_addr, dst_port, src_addr):
        if data and (d.ts > limit or len(data) >= REPLAY_BATCH_MAX):
            flush()
            if until is not None and until():
                return now
        now = d.ts
        if not data:
            fire(now)
            t = engine.get_timer()
            limit = now + REPLAY_BATCH_SPAN
            if t is not None and t < limit:
                limit = t
        data.append(d.payload)
        addrs.append(d.src)
        times.append(now)
    flush()
    if until is not None and until():
        return now
    if drain_timers and now is not None:
        for _ in range(10000):
            if until is not None and until():
                break
            t = engine.get_timer()
            if t is None:
                break
            now = max(now, t)
            engine.handle_timer(now)
    return now
