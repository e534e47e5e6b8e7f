"""FLUTE FDT Instance XML codec (RFC 6726 §3.4.2; RFC 3926 documents accepted).

Decoding is lenient about namespaces: the root ``FDT-Instance`` and its ``File``
children are recognised with any namespace or none (RFC 6726 uses
``urn:ietf:params:xml:ns:fdt``; RFC 3926-era and 3GPP senders such as 5G-MAG
rt-libflute and ypo/flute use ``urn:IETF:metadata:2005:FLUTE:FDT``, and the RFC 6726
Appendix B example has none).  The namespace read is kept in
:attr:`FDTInstance.namespace`; new instances default to the 2005 namespace because
deployed receivers (rt-libflute) reject the RFC 6726 URN.  Pass
``namespace=FDT_NS_RFC6726`` for strict RFC 6726 output.

Unknown attributes are kept (``extra``, Clark notation ``{uri}name`` for namespaced
ones) and re-emitted; unknown child elements are kept as ElementTree elements
(``elements``, not compared).  Documents with a DTD (``<!DOCTYPE``) or entity
declarations are rejected (no XML bombs, no external entities).  Decoding raises only
:class:`alc.errors.DecodeError`.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field, replace
from typing import Any
from xml.parsers import expat
from xml.sax.saxutils import escape

from alc.errors import DecodeError

__all__ = [
    "FDT_NS",
    "FDT_NS_2005",
    "FDT_NS_RFC6726",
    "FEC_OTI_ATTRIBUTES",
    "FDTFile",
    "FDTInstance",
    "decode_fdt",
    "decompress_fdt",
    "encode_fdt",
]

FDT_NS_2005 = "urn:IETF:metadata:2005:FLUTE:FDT"
FDT_NS_RFC6726 = "urn:ietf:params:xml:ns:fdt"
FDT_NS = FDT_NS_2005

FEC_OTI_ATTRIBUTES = (
    "FEC-OTI-FEC-Encoding-ID",
    "FEC-OTI-FEC-Instance-ID",
    "FEC-OTI-Maximum-Source-Block-Length",
    "FEC-OTI-Encoding-Symbol-Length",
    "FEC-OTI-Max-Number-of-Encoding-Symbols",
    "FEC-OTI-Scheme-Specific-Info",
)
_FEC_SET = frozenset(FEC_OTI_ATTRIBUTES)
_U64 = 1 << 64
_ESC = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


@dataclass
class FDTFile:
    """One ``File`` element.  ``fec`` maps FEC-OTI-* attribute names to their text;
    ``extra`` holds every other attribute (order kept)."""

    toi: int
    content_location: str
    content_length: int | None = None
    transfer_length: int | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    content_md5: str | None = None
    fec: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    elements: list[ET.Element] = field(default_factory=list, compare=False, repr=False)

    @property
    def md5_digest(self) -> bytes | None:
        """The 16-octet MD5 from Content-MD5, or None if absent."""
        if self.content_md5 is None:
            return None
        try:
            d = base64.b64decode(self.content_md5, validate=True)
        except (binascii.Error, ValueError):
            raise DecodeError("Content-MD5", "not base64") from None
        if len(d) != 16:
            raise DecodeError("Content-MD5", f"{len(d)} octets, not 16")
        return d

    def attributes(self) -> dict[str, str]:
        """The element's attributes as on the wire (names per RFC 6726)."""
        a: dict[str, str] = {"TOI": str(self.toi), "Content-Location": self.content_location}
        if self.content_length is not None:
            a["Content-Length"] = str(self.content_length)
        if self.transfer_length is not None:
            a["Transfer-Length"] = str(self.transfer_length)
        if self.content_type is not None:
            a["Content-Type"] = self.content_type
        if self.content_encoding is not None:
            a["Content-Encoding"] = self.content_encoding
        if self.content_md5 is not None:
            a["Content-MD5"] = self.content_md5
        a.update(self.fec)
        a.update(self.extra)
        return a


@dataclass
class FDTInstance:
    """An FDT Instance.  ``expires`` is the 32-bit NTP-seconds value of ``Expires``;
    ``content_type``, ``content_encoding`` and ``fec`` (FEC-OTI-* attributes) are
    defaults inherited by every file (see :meth:`effective`)."""

    expires: int
    complete: bool | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    fec: dict[str, str] = field(default_factory=dict)
    files: list[FDTFile] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)
    namespace: str = FDT_NS
    elements: list[ET.Element] = field(default_factory=list, compare=False, repr=False)

    def file(self, toi: int) -> FDTFile | None:
        for f in self.files:
            if f.toi == toi:
                return f
        return None

    def effective(self, f: FDTFile) -> FDTFile:
        """``f`` with the instance-level defaults filled in (file-level values win)."""
        fec = dict(self.fec)
        fec.update(f.fec)
        return replace(
            f,
            content_type=f.content_type if f.content_type is not None else self.content_type,
            content_encoding=(
                f.content_encoding if f.content_encoding is not None else self.content_encoding
            ),
            fec=fec,
        )

    def file_attributes(self, f: FDTFile) -> dict[str, str]:
        """Merged attribute dict of ``f`` (defaults inherited), e.g. for
        ``alc.fec.oti_from_fdt_attributes``."""
        return self.effective(f).attributes()

    def attributes(self) -> dict[str, str]:
        a: dict[str, str] = {"Expires": str(self.expires)}
        if self.complete is not None:
            a["Complete"] = "true" if self.complete else "false"
        if self.content_type is not None:
            a["Content-Type"] = self.content_type
        if self.content_encoding is not None:
            a["Content-Encoding"] = self.content_encoding
        a.update(self.fec)
        a.update(self.extra)
        return a

    def encode(self) -> bytes:
        return encode_fdt(self)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> FDTInstance:
        return decode_fdt(data)


# --------------------------------------------------------------------------- encode


def _attrs_xml(attrs: dict[str, str], prefixes: dict[str, str]) -> str:
    parts = []
    for k, v in attrs.items():
        if k.startswith("{"):
            uri, _, local = k[1:].partition("}")
            k = f"{prefixes[uri]}:{local}"
        parts.append(f' {k}="{escape(v, _ESC)}"')
    return "".join(parts)


def encode_fdt(inst: FDTInstance) -> bytes:
    """UTF-8 XML with declaration; default namespace ``inst.namespace`` (none if empty)."""
    ia = inst.attributes()
    fas = [f.attributes() for f in inst.files]
    prefixes: dict[str, str] = {}
    for attrs in [ia, *fas]:
        for k in attrs:
            if k.startswith("{"):
                uri = k[1:].partition("}")[0]
                if uri not in prefixes:
                    prefixes[uri] = f"x{len(prefixes)}"
    head = ['<?xml version="1.0" encoding="UTF-8"?>\n<FDT-Instance']
    if inst.namespace:
        head.append(f' xmlns="{escape(inst.namespace, _ESC)}"')
    for uri, p in prefixes.items():
        head.append(f' xmlns:{p}="{escape(uri, _ESC)}"')
    head.append(_attrs_xml(ia, prefixes))
    head.append(">\n")
    out = ["".join(head)]
    for f, fa in zip(inst.files, fas, strict=True):
        if f.elements:
            inner = "".join(ET.tostring(e, encoding="unicode") for e in f.elements)
            out.append(f"  <File{_attrs_xml(fa, prefixes)}>{inner}</File>\n")
        else:
            out.append(f"  <File{_attrs_xml(fa, prefixes)}/>\n")
    for e in inst.elements:
        out.append("  " + ET.tostring(e, encoding="unicode") + "\n")
    out.append("</FDT-Instance>\n")
    return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------- decode


def _reject_dtd(*_: Any) -> None:
    raise DecodeError("FDT", "DTD / entity declarations are not allowed")


def _parse(data: bytes) -> ET.Element:
    """Namespace-aware expat parse into ElementTree elements, refusing any DTD."""
    tb = ET.TreeBuilder()
    p = expat.ParserCreate(namespace_separator="}")

    def clark(name: str) -> str:
        return "{" + name if "}" in name else name

    def start(name: str, attrs: dict[str, str]) -> None:
        tb.start(clark(name), {clark(k): v for k, v in attrs.items()})

    def end(name: str) -> None:
        tb.end(clark(name))

    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = tb.data
    p.StartDoctypeDeclHandler = _reject_dtd
    p.EntityDeclHandler = _reject_dtd
    p.UnparsedEntityDeclHandler = _reject_dtd
    p.ExternalEntityRefHandler = _reject_dtd  # type: ignore[assignment]
    p.Parse(data, True)
    return tb.close()


def _uint(v: str, name: str, limit: int = _U64) -> int:
    s = v.strip()
    if not s.isdigit() or not s.isascii() or len(s) > 40:
        raise DecodeError(name, f"not an unsigned integer: {v[:40]!r}")
    n = int(s)
    if n >= limit:
        raise DecodeError(name, f"{n} out of range")
    return n


def _check_fec(fec: dict[str, str]) -> None:
    for k, v in fec.items():
        if k == "FEC-OTI-Scheme-Specific-Info":
            continue
        _uint(v, k, 256 if k == "FEC-OTI-FEC-Encoding-ID" else _U64)


def _split(elem_ns: str, attrs: dict[str, str], known: frozenset[str]) -> tuple[
    dict[str, str], dict[str, str], dict[str, str]
]:
    """(known, fec, extra); attributes qualified with the element's own namespace are
    treated as unqualified."""
    kn: dict[str, str] = {}
    fec: dict[str, str] = {}
    extra: dict[str, str] = {}
    for k, v in attrs.items():
        name = k
        if elem_ns and k.startswith("{" + elem_ns + "}"):
            name = k[len(elem_ns) + 2 :]
        if name in known:
            kn[name] = v
        elif name in _FEC_SET:
            fec[name] = v
        else:
            extra[k] = v
    return kn, fec, extra


_INST_KNOWN = frozenset({"Expires", "Complete", "Content-Type", "Content-Encoding"})
_FILE_KNOWN = frozenset(
    {
        "TOI",
        "Content-Location",
        "Content-Length",
        "Transfer-Length",
        "Content-Type",
        "Content-Encoding",
        "Content-MD5",
    }
)


def _ns_local(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def decode_fdt(data: bytes | bytearray | memoryview) -> FDTInstance:
    """Parse an FDT Instance document (already content-decoded, see
    :func:`decompress_fdt`)."""
    raw = bytes(data)
    try:
        root = _parse(raw)
    except DecodeError:
        raise
    except Exception as e:  # expat.ExpatError, LookupError, UnicodeError, ...
        raise DecodeError("FDT", f"not well-formed XML: {e}") from None
    ns, local = _ns_local(root.tag)
    if local != "FDT-Instance":
        raise DecodeError("FDT", f"root element is {local!r}, not FDT-Instance")
    kn, fec, extra = _split(ns, dict(root.attrib), _INST_KNOWN)
    if "Expires" not in kn:
        raise DecodeError("Expires", "required attribute missing")
    expires = _uint(kn["Expires"], "Expires")
    complete: bool | None = None
    if "Complete" in kn:
        c = kn["Complete"].strip()
        if c in ("true", "1"):
            complete = True
        elif c in ("false", "0"):
            complete = False
        else:
            raise DecodeError("Complete", f"not an xs:boolean: {c[:40]!r}")
    _check_fec(fec)
    inst = FDTInstance(
        expires,
        complete,
        kn.get("Content-Type"),
        kn.get("Content-Encoding"),
        fec,
        [],
        extra,
        ns,
    )
    for child in root:
        if not isinstance(child.tag, str):
            continue
        cns, clocal = _ns_local(child.tag)
        if clocal != "File" or cns != ns:
            inst.elements.append(child)
            continue
        fk, ffec, fextra = _split(cns, dict(child.attrib), _FILE_KNOWN)
        if "TOI" not in fk:
            raise DecodeError("File.TOI", "required attribute missing")
        if "Content-Location" not in fk:
            raise DecodeError("File.Content-Location", "required attribute missing")
        toi = _uint(fk["TOI"], "File.TOI", 1 << 112)
        if toi == 0:
            raise DecodeError("File.TOI", "TOI 0 is reserved for the FDT")
        _check_fec(ffec)
        cl = fk.get("Content-Length")
        tl = fk.get("Transfer-Length")
        inst.files.append(
            FDTFile(
                toi,
                fk["Content-Location"],
                _uint(cl, "File.Content-Length") if cl is not None else None,
                _uint(tl, "File.Transfer-Length") if tl is not None else None,
                fk.get("Content-Type"),
                fk.get("Content-Encoding"),
                fk.get("Content-MD5"),
                ffec,
                fextra,
                list(child),
            )
        )
    return inst


_WBITS = {1: 15, 2: -15, 3: 31}


def decompress_fdt(data: bytes, cenc: int, max_size: int = 16 << 20) -> bytes:
    """Undo the EXT_CENC content encoding of an FDT Instance (0 null, 1 ZLIB,
    2 DEFLATE, 3 GZIP), refusing outputs larger than ``max_size`` (zip bombs)."""
    if cenc == 0:
        return bytes(data)
    if cenc not in _WBITS:
        raise DecodeError("EXT_CENC", f"unknown content encoding {cenc}")
    d = zlib.decompressobj(_WBITS[cenc])
    try:
        out = d.decompress(bytes(data), max_size + 1)
    except zlib.error as e:
        raise DecodeError("EXT_CENC", f"corrupt compressed FDT: {e}") from None
    if len(out) > max_size:
        raise DecodeError("EXT_CENC", f"FDT expands beyond {max_size} octets")
    if not d.eof:
        raise DecodeError("EXT_CENC", "truncated compressed FDT")
    return out
