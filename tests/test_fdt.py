"""FDT Instance XML codec (RFC 6726 §3.4.2, RFC 3926 documents)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alc.errors import DecodeError
from alc.fdt import (
    FDT_NS_2005,
    FDT_NS_RFC6726,
    FDTFile,
    FDTInstance,
    decode_fdt,
    decompress_fdt,
    encode_fdt,
)

PCAP = Path("/work/shared/interop/flute-plain.pcap")
if not PCAP.exists():  # pragma: no cover
    PCAP = Path(__file__).resolve().parents[2] / "shared/interop/flute-plain.pcap"

# RFC 6726 Appendix B (the informative example: no default namespace)
RFC6726_EXAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<FDT-Instance xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:fl="http://www.example.com/flute"
    xsi:schemaLocation="http://www.example.com/flute-fdt.xsd"
    Expires="2890842807">
  <File
    Content-Location="http://www.example.com/menu/tracklist.html"
    TOI="1"
    Content-Type="text/html"/>
  <File
    Content-Location="http://www.example.com/tracks/track1.mp3"
    TOI="2"
    Content-Length="6100"
    Content-Type="audio/mp3"
    Content-Encoding="gzip"
    Content-MD5="+VP5IrWploFkZWc11iLDdA=="
    Some-Private-Extension-Tag="abc123"/>
</FDT-Instance>
"""


def test_rfc6726_example() -> None:
    inst = decode_fdt(RFC6726_EXAMPLE)
    assert inst.expires == 2890842807 and inst.complete is None and inst.namespace == ""
    assert inst.extra == {
        "{http://www.w3.org/2001/XMLSchema-instance}schemaLocation": "http://www.example.com/flute-fdt.xsd"
    }
    f1, f2 = inst.files
    assert (f1.toi, f1.content_location, f1.content_type) == (
        1,
        "http://www.example.com/menu/tracklist.html",
        "text/html",
    )
    assert f1.content_length is None and f1.content_md5 is None and f1.md5_digest is None
    assert (f2.toi, f2.content_length, f2.content_encoding) == (2, 6100, "gzip")
    assert f2.content_md5 == "+VP5IrWploFkZWc11iLDdA=="
    assert f2.md5_digest is not None and len(f2.md5_digest) == 16
    assert f2.extra == {"Some-Private-Extension-Tag": "abc123"}
    again = decode_fdt(encode_fdt(inst))
    assert again == inst


def test_encode_exact_bytes() -> None:
    inst = FDTInstance(
        expires=3900000000,
        complete=True,
        fec={"FEC-OTI-FEC-Encoding-ID": "0", "FEC-OTI-Encoding-Symbol-Length": "1400"},
        files=[FDTFile(1, "a&b.bin", content_length=5, content_md5="XrY7u+Ae7tCTyyK7j1rNww==")],
    )
    assert inst.encode() == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<FDT-Instance xmlns="urn:IETF:metadata:2005:FLUTE:FDT" Expires="3900000000" '
        b'Complete="true" FEC-OTI-FEC-Encoding-ID="0" FEC-OTI-Encoding-Symbol-Length="1400">\n'
        b'  <File TOI="1" Content-Location="a&amp;b.bin" Content-Length="5" '
        b'Content-MD5="XrY7u+Ae7tCTyyK7j1rNww=="/>\n'
        b"</FDT-Instance>\n"
    )
    assert FDTInstance.decode(inst.encode()) == inst


def test_rfc6726_namespace_and_all_attributes() -> None:
    fec = {
        "FEC-OTI-FEC-Encoding-ID": "129",
        "FEC-OTI-FEC-Instance-ID": "0",
        "FEC-OTI-Maximum-Source-Block-Length": "32",
        "FEC-OTI-Encoding-Symbol-Length": "1024",
        "FEC-OTI-Max-Number-of-Encoding-Symbols": "48",
        "FEC-OTI-Scheme-Specific-Info": "CAE=",
    }
    inst = FDTInstance(
        expires=1,
        complete=False,
        content_type="application/octet-stream",
        content_encoding="gzip",
        fec=fec,
        namespace=FDT_NS_RFC6726,
        extra={"{urn:x}a": "1", "Other": "q\"<>'\n"},
        files=[
            FDTFile(
                toi=(1 << 112) - 1,
                content_location="dir/ü.txt",
                content_length=2**64 - 1,
                transfer_length=0,
                content_type="text/plain",
                content_encoding="deflate",
                content_md5="1B2M2Y8AsgTpgAmY7PhCfg==",
                fec={"FEC-OTI-Encoding-Symbol-Length": "512"},
                extra={"{urn:x}b": "2", "{urn:y}c": "3"},
            )
        ],
    )
    wire = inst.encode()
    assert b'xmlns="urn:ietf:params:xml:ns:fdt"' in wire
    for name in fec:
        assert f' {name}="'.encode() in wire
    d = decode_fdt(wire)
    assert d == inst
    assert d.files[0].content_location == "dir/ü.txt"


def test_inheritance() -> None:
    inst = FDTInstance(
        expires=5,
        content_type="text/html",
        content_encoding="gzip",
        fec={"FEC-OTI-FEC-Encoding-ID": "0", "FEC-OTI-Encoding-Symbol-Length": "1400"},
        files=[
            FDTFile(1, "a", content_length=10),
            FDTFile(2, "b", content_type="audio/mp3", fec={"FEC-OTI-Encoding-Symbol-Length": "512"}),
        ],
    )
    a, b = (inst.effective(f) for f in inst.files)
    assert (a.content_type, a.content_encoding) == ("text/html", "gzip")
    assert a.fec == {"FEC-OTI-FEC-Encoding-ID": "0", "FEC-OTI-Encoding-Symbol-Length": "1400"}
    assert b.content_type == "audio/mp3"
    assert b.fec["FEC-OTI-Encoding-Symbol-Length"] == "512"
    assert inst.files[0].content_type is None  # original untouched
    attrs = inst.file_attributes(inst.file(1))  # type: ignore[arg-type]
    assert attrs["Content-Length"] == "10" and attrs["FEC-OTI-FEC-Encoding-ID"] == "0"
    assert inst.file(3) is None


def test_unknown_elements_kept() -> None:
    doc = b"""<FDT-Instance xmlns="urn:ietf:params:xml:ns:fdt" xmlns:m="urn:3gpp"
      Expires="10" m:foo="bar">
      <File TOI="4" Content-Location="x"><m:Cache-Control><m:no-cache>true</m:no-cache></m:Cache-Control></File>
      <m:Base-URL-1>http://a/</m:Base-URL-1>
    </FDT-Instance>"""
    inst = decode_fdt(doc)
    assert inst.extra == {"{urn:3gpp}foo": "bar"}
    assert [e.tag for e in inst.elements] == ["{urn:3gpp}Base-URL-1"]
    assert [e.tag for e in inst.files[0].elements] == ["{urn:3gpp}Cache-Control"]
    again = decode_fdt(inst.encode())
    assert again == inst
    assert again.elements[0].text == "http://a/"
    assert again.files[0].elements[0][0].text == "true"


def test_ns_qualified_attributes_of_own_namespace() -> None:
    doc = (
        b'<f:FDT-Instance xmlns:f="urn:IETF:metadata:2005:FLUTE:FDT" f:Expires="7">'
        b'<f:File TOI="1" Content-Location="z"/></f:FDT-Instance>'
    )
    inst = decode_fdt(doc)
    assert inst.expires == 7 and inst.namespace == FDT_NS_2005 and inst.files[0].toi == 1


@pytest.mark.parametrize(
    "doc,field",
    [
        (b"", "FDT"),
        (b"not xml", "FDT"),
        (b"<FDT-Instance Expires='1'>", "FDT"),
        (b"<Other Expires='1'/>", "FDT"),
        (b"<FDT-Instance/>", "Expires"),
        (b"<FDT-Instance Expires='x'/>", "Expires"),
        (b"<FDT-Instance Expires='-1'/>", "Expires"),
        (b"<FDT-Instance Expires='1' Complete='yes'/>", "Complete"),
        (b"<FDT-Instance Expires='1'><File Content-Location='a'/></FDT-Instance>", "File.TOI"),
        (b"<FDT-Instance Expires='1'><File TOI='1'/></FDT-Instance>", "File.Content-Location"),
        (b"<FDT-Instance Expires='1'><File TOI='0' Content-Location='a'/></FDT-Instance>", "File.TOI"),
        (b"<FDT-Instance Expires='1'><File TOI='1' Content-Location='a' Content-Length='1.5'/></FDT-Instance>", "File.Content-Length"),
        (b"<FDT-Instance Expires='1' FEC-OTI-FEC-Encoding-ID='256'/>", "FEC-OTI-FEC-Encoding-ID"),
        (b"<FDT-Instance Expires='1'><File TOI='1' Content-Location='a' FEC-OTI-Encoding-Symbol-Length='a'/></FDT-Instance>", "FEC-OTI-Encoding-Symbol-Length"),
        (b"<FDT-Instance Expires='1' Expires='2'/>", "FDT"),
        (b"<x:FDT-Instance Expires='1'/>", "FDT"),  # unbound prefix
    ],
)
def test_reject(doc: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as ei:
        decode_fdt(doc)
    assert ei.value.field == field


@pytest.mark.parametrize(
    "doc",
    [
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        b"<FDT-Instance Expires='1'>&lol2;</FDT-Instance>",
        b'<!DOCTYPE FDT-Instance SYSTEM "http://example.invalid/x.dtd"><FDT-Instance Expires="1"/>',
        b'<!DOCTYPE FDT-Instance [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<FDT-Instance Expires="1"><File TOI="1" Content-Location="&x;"/></FDT-Instance>',
    ],
)
def test_dtd_rejected(doc: bytes) -> None:
    with pytest.raises(DecodeError) as ei:
        decode_fdt(doc)
    assert ei.value.field == "FDT"


def test_bad_md5() -> None:
    f = FDTFile(1, "a", content_md5="!!!")
    with pytest.raises(DecodeError):
        _ = f.md5_digest
    with pytest.raises(DecodeError):
        _ = FDTFile(1, "a", content_md5="AAAA").md5_digest


def test_utf16_document() -> None:
    doc = '<?xml version="1.0" encoding="UTF-16"?><FDT-Instance Expires="3"><File TOI="2" Content-Location="é"/></FDT-Instance>'
    inst = decode_fdt(doc.encode("utf-16"))
    assert inst.files[0].content_location == "é"


def test_decompress() -> None:
    doc = FDTInstance(expires=1, files=[FDTFile(1, "a")]).encode()
    co = zlib.compressobj(wbits=-15)
    deflated = co.compress(doc) + co.flush()
    for cenc, data in ((0, doc), (1, zlib.compress(doc)), (2, deflated), (3, gzip.compress(doc))):
        assert decode_fdt(decompress_fdt(data, cenc)) == decode_fdt(doc)
    with pytest.raises(DecodeError):
        decompress_fdt(doc, 4)
    with pytest.raises(DecodeError):
        decompress_fdt(b"garbage", 1)
    with pytest.raises(DecodeError):
        decompress_fdt(zlib.compress(doc)[:-6], 1)
    with pytest.raises(DecodeError):
        decompress_fdt(zlib.compress(b"\x00" * 100000), 1, max_size=1000)


# ------------------------------------------------------------------ properties

text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
uint = st.integers(0, 2**64 - 1)
fec_attrs = st.dictionaries(
    st.sampled_from(
        [
            "FEC-OTI-FEC-Instance-ID",
            "FEC-OTI-Maximum-Source-Block-Length",
            "FEC-OTI-Encoding-Symbol-Length",
            "FEC-OTI-Max-Number-of-Encoding-Symbols",
        ]
    ),
    uint.map(str),
    max_size=4,
)
extra = st.dictionaries(
    st.sampled_from(["X-A", "Priv", "{urn:q}r", "{urn:z}s"]), text, max_size=3
)
files = st.builds(
    FDTFile,
    st.integers(1, 2**112 - 1),
    text,
    st.none() | uint,
    st.none() | uint,
    st.none() | text,
    st.none() | text,
    st.none() | st.binary(min_size=16, max_size=16).map(lambda b: __import__("base64").b64encode(b).decode()),
    fec_attrs,
    extra,
)
instances = st.builds(
    FDTInstance,
    st.integers(0, 2**32 - 1),
    st.none() | st.booleans(),
    st.none() | text,
    st.none() | text,
    fec_attrs,
    st.lists(files, max_size=4),
    extra,
    st.sampled_from([FDT_NS_2005, FDT_NS_RFC6726, ""]),
)


@settings(max_examples=200)
@given(instances)
def test_roundtrip(inst: FDTInstance) -> None:
    assert decode_fdt(encode_fdt(inst)) == inst


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_only_decode_error(buf: bytes) -> None:
    try:
        decode_fdt(buf)
    except DecodeError:
        pass


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from(
            [
                "<FDT-Instance",
                " Expires='1'",
                " Complete='true'",
                ">",
                "/>",
                "<File",
                " TOI='3'",
                " TOI='0'",
                " Content-Location='a'",
                " Content-Length='9'",
                "</File>",
                "</FDT-Instance>",
                "<!DOCTYPE x>",
                "&amp;",
                "&x;",
                " xmlns='urn:ietf:params:xml:ns:fdt'",
                "<?xml version='1.0'?>",
            ]
        ),
        max_size=14,
    )
)
def test_structured_garbage_only_decode_error(parts: list[str]) -> None:
    try:
        inst = decode_fdt("".join(parts).encode())
    except DecodeError:
        return
    assert decode_fdt(inst.encode()) == inst


# ------------------------------------------------------------------ interop capture


def _fdt_payloads() -> list[bytes]:
    data = PCAP.read_bytes()
    off, out = 24, []
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, off)
        off += 16
        frame = data[off : off + incl]
        off += incl
        ip = frame[14:]
        udp = ip[(ip[0] & 0xF) * 4 :]
        _, dport, ulen, _ = struct.unpack_from("!HHHH", udp)
        pkt = udp[8:ulen]
        if dport == 40085 and pkt[10:12] == b"\x00\x00":  # 16-bit TOI 0
            n = pkt[2] * 4
            out.append(pkt[n + 4 :])  # after the 4-octet Compact No-Code payload ID
    return out


@pytest.mark.skipif(not PCAP.exists(), reason="interop capture not available")
def test_rt_libflute_fdt() -> None:
    payloads = _fdt_payloads()
    assert payloads
    for doc in payloads:
        inst = decode_fdt(doc)
        assert inst.namespace == FDT_NS_2005
        assert inst.fec["FEC-OTI-Encoding-Symbol-Length"] == "1436"
        assert inst.fec["FEC-OTI-Maximum-Source-Block-Length"] == "64"
        for f in inst.files:
            eff = inst.effective(f)
            assert eff.fec["FEC-OTI-FEC-Encoding-ID"] == "0"
            assert f.content_length == f.transfer_length
            assert f.md5_digest is not None
        assert decode_fdt(inst.encode()) == inst
    names = {f.content_location: f for doc in payloads for f in decode_fdt(doc).files}
    assert {n: f.toi for n, f in names.items()} == {"f1k.bin": 1, "f100k.bin": 2, "f1m.bin": 3}
    assert names["f1m.bin"].content_length == 1048576
    assert names["f1k.bin"].content_type == "application/octet-stream"


@pytest.mark.interop
@pytest.mark.parametrize("cenc", [0, 1, 2, 3])
def test_ypo_flute_sender_fdt(cenc: int) -> None:
    """FDT packets of ypo/flute (PyPI flute-alc): headers round-trip, XML (content-encoded
    per EXT_CENC) decodes with its 3GPP extras kept."""
    sender = pytest.importorskip("flute").sender
    from alc.lct import EXT_CENC, EXT_FDT
    from alc.packet import split

    cfg = sender.Config()
    cfg.fdt_cenc = cenc
    s = sender.Sender(7, sender.Oti.new_no_code(1400, 64), cfg)
    s.add_object_from_buffer(b"hello" * 300, "text/plain", "file:///hello.txt", None)
    s.publish()
    seen = 0
    for _ in range(100):
        p = s.read()
        if p is None:
            break
        pkt = bytes(p)
        h, n = split(pkt)
        assert h.encode() == pkt[:n] and h.tsi == 7
        if h.toi != 0:
            continue
        seen += 1
        assert h.find(EXT_FDT).version == 2
        c = h.find(EXT_CENC)
        doc = decompress_fdt(pkt[n + 4 :], c.cenc if c is not None else 0)
        inst = decode_fdt(doc)
        assert inst.namespace == FDT_NS_2005
        (f,) = inst.files
        assert (f.toi, f.content_location, f.content_length) == (1, "file:///hello.txt", 1500)
        assert inst.effective(f).fec["FEC-OTI-Encoding-Symbol-Length"] == "1400"
        assert decode_fdt(inst.encode()) == inst
    assert seen
