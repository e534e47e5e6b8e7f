"""FEC Encoding ID 6 (RaptorQ, RFC 6330) through the raptorq package."""

from __future__ import annotations

import os
import random

import pytest
import raptorq
from hypothesis import given, settings
from hypothesis import strategies as st

from alc.errors import DecodeError
from alc.fec import OTI, decode_fti, get_scheme, oti_from_fdt_attributes, oti_to_fdt_attributes
from alc.fec.raptorq_scheme import default_parameters


def _scheme(size: int, t: int) -> tuple[OTI, object]:
    s = get_scheme(OTI(6, size, t, 0))  # Z = 0: sender lets the crate pick Z, N, Al
    return s.oti, s


def test_payload_id_layout() -> None:
    _, s = _scheme(10_000, 1024)
    assert s.payload_id_length == 4
    assert s.encode_payload_id(0xAB, 0x123456) == bytes.fromhex("ab123456")
    assert s.decode_payload_id(b"\0ab" + bytes.fromhex("ab123456"), 3) == (0xAB, 0x123456)
    with pytest.raises(DecodeError):
        s.decode_payload_id(b"\0\0\0")


def test_oti_roundtrip_fti_and_fdt() -> None:
    oti, s = _scheme(1_000_000, 1400)
    assert (oti.num_source_blocks, oti.num_sub_blocks, oti.alignment) == (1, 1, 8)
    body = s.encode_fti(oti)
    assert len(body) == 14 and body[-2:] == b"\0\0"
    assert decode_fti(6, body) == oti
    assert oti_from_fdt_attributes(oti_to_fdt_attributes(oti)) == oti
    assert get_scheme(decode_fti(6, body)).block_lengths() == s.block_lengths()


@pytest.mark.parametrize("size,t,loss", [(1, 64, 0.0), (10_000, 1024, 0.3), (300_000, 1400, 0.2)])
def test_roundtrip_with_loss(size: int, t: int, loss: float) -> None:
    data = os.urandom(size)
    oti, s = _scheme(size, t)
    rx = get_scheme(decode_fti(6, s.encode_fti(oti)))
    rnd = random.Random(size)
    out = b""
    pos = 0
    for sbn, k in enumerate(s.block_lengths()):
        src = [data[pos + i * t : pos + (i + 1) * t] for i in range(k)]
        pos += k * t
        overhead = int(k * loss) + 4
        pkts = list(enumerate(src)) + s.repair_symbols(sbn, src, overhead)
        assert [e for e, _ in pkts] == list(range(k + overhead))
        dec = rx.block_decoder(sbn)
        done = False
        for esi, sym in pkts:
            if rnd.random() < loss:
                continue
            done = dec.add(esi, sym)
            if done:
                break
        assert done
        out += b"".join(dec.decode())
    assert out == data


def test_block_coding_matches_rfc6330_whole_object() -> None:
    """Z = 2: our per-block symbols equal the crate's whole-object RFC 6330 encoding, so the
    (SBN, ESI) we put on the wire are what any RFC 6330 receiver expects."""
    t = 64
    size = 65_600 * t - 5
    z, n, _al = default_parameters(size, t)
    assert z == 2 and n == 1
    data = os.urandom(size)
    s = get_scheme(OTI(6, size, t, 0))
    assert s.oti.num_source_blocks == 2
    whole = {}
    for p in raptorq.Encoder.with_defaults(data, t).get_encoded_packets(2):
        p = bytes(p)
        whole[(p[0], int.from_bytes(p[1:4], "big"))] = p[4:]
    pos = 0
    for sbn, k in enumerate(s.block_lengths()):
        src = [data[pos + i * t : pos + (i + 1) * t] for i in range(k)]
        pos += k * t
        for esi, sym in s.repair_symbols(sbn, src, 2):
            assert whole[(sbn, esi)] == sym
        assert whole[(sbn, 0)] == src[0]


@pytest.mark.parametrize(
    "oti",
    [
        OTI(6, 1000, 60, 0),  # T not a multiple of 8
        OTI(6, 1000, 32, 0),  # T < 64
        OTI(6, 1000, 64, 0, num_source_blocks=1, num_sub_blocks=3, alignment=8),  # N unsupported
        OTI(6, 10**7, 64, 0, num_source_blocks=1, num_sub_blocks=1, alignment=8),  # K > K'max
    ],
)
def test_unsupported_parameters(oti: OTI) -> None:
    with pytest.raises(DecodeError):
        get_scheme(oti)


def test_decoder_rejects_oversized_symbol() -> None:
    _, s = _scheme(10_000, 1024)
    d = s.block_decoder(0)
    with pytest.raises(DecodeError):
        d.add(0, b"x" * 1025)


@given(
    items=st.lists(st.tuples(st.integers(-2, (1 << 24) + 2), st.binary(max_size=80)), max_size=20)
)
@settings(max_examples=50, deadline=None)
def test_decoder_fuzz_only_decodeerror(items: list[tuple[int, bytes]]) -> None:
    s = get_scheme(OTI(6, 1000, 64, 0))
    d = s.block_decoder(0)
    for esi, sym in items:
        try:
            if d.add(esi, sym):
                assert len(d.decode()) == d.k
                break
        except DecodeError:
            continue


def test_empty_object_over_raptorq_round_trip() -> None:
    """An empty file over RaptorQ: F = 0 has no source block (Z = 0, RFC 6330 §4.3);
    the sender raised ZeroDivisionError deriving Z before."""
    from alc.receiver import AlcReceiver, FileReceived, ReceiverConfig
    from alc.sender import AlcSender, SenderConfig

    s = AlcSender(SenderConfig(rate_bps=None, fec="raptorq"))
    s.add_bytes(b"", "empty")
    s.add_bytes(b"x" * 5000, "five")
    r = AlcReceiver(ReceiverConfig())
    for p in s.all_packets(1.8e9):
        r.receive_datagram(p, None, 1.8e9)
    got = {}
    while (ev := r.next_event()) is not None:
        if isinstance(ev, FileReceived):
            got[ev.name] = ev.data
    assert got == {"empty": b"", "five": b"x" * 5000}
