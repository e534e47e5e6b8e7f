"""tshark (Wireshark's ALC/LCT/FEC dissectors) decodes the packets our sender writes.

Compact No-Code is checked field by field (TSI, TOI, SBN, ESI, EXT_FTI L/E/B, EXT_FDT
version/instance, close flags) and the FDT XML attributes as tshark reads them back equal
the ones we sent.  For Reed-Solomon (ID 5) this Wireshark decodes TSI/TOI/codepoint and the
FTI transfer length only (its rmt-fec has no ID 5 payload-ID support), which we check.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from alc.pcap import PcapWriter
from alc.receiver import parse_lct
from alc.sender import AlcSender, SenderConfig
from tesla.cli.main import main

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed"),
]

PORT = 4555
FIELDS = [
    "rmt-lct.tsi", "rmt-lct.toi", "rmt-lct.codepoint", "rmt-fec.sbn", "rmt-fec.esi",
    "rmt-fec.fti.transfer_length", "rmt-fec.fti.encoding_symbol_length",
    "rmt-fec.fti.max_source_block_length", "rmt-lct.fdt_instance_id", "rmt-lct.flute_version",
    "rmt-lct.flags.close_object", "rmt-lct.flags.close_session",
]


def tshark_fields(pcap: Path, fields: list[str], extra: list[str] | None = None) -> list[list[str]]:
    cmd = ["tshark", "-r", str(pcap), "-d", f"udp.port=={PORT},alc", "-T", "fields", "-E", "separator=;"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd + (extra or []), capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split(";") for line in out.splitlines()]


def _int(v: str) -> int | None:
    return int(v, 0) if v else None


def write_capture(tmp_path: Path, **cfg: object) -> tuple[AlcSender, list[bytes], Path]:
    s = AlcSender(SenderConfig(rate_bps=None, **cfg))  # type: ignore[arg-type]
    s.add_bytes(b"hello tshark\n", "hello.txt")
    s.add_bytes(bytes(range(256)) * 80, "dir/blocks.bin")  # 20480 octets
    pkts = s.all_packets(1_800_000_000.0)
    p = tmp_path / "ours.pcap"
    with PcapWriter(p) as w:
        for i, pkt in enumerate(pkts):
            w.write(1_800_000_000.0 + i * 1e-4, ("127.0.0.1", 40000), ("239.255.9.9", PORT), pkt)
    return s, pkts, p


def test_tshark_decodes_nocode_fields(tmp_path: Path) -> None:
    s, pkts, pcap = write_capture(tmp_path, tsi=0x12345, max_source_block_length=4, symbol_length=1000)
    rows = tshark_fields(pcap, FIELDS)
    assert len(rows) == len(pkts)
    sbn_seen = set()
    for pkt, row in zip(pkts, rows, strict=True):
        h = parse_lct(pkt)
        tsi, toi, cp, sbn, esi, tl, e, b, iid, ver, bflag, aflag = row
        assert _int(tsi) == 0x12345
        assert _int(toi) == h.toi
        assert _int(cp) == 0
        assert (bflag == "1") == h.b and (aflag == "1") == h.a
        if h.toi is None:
            continue
        want_sbn, want_esi = int.from_bytes(pkt[h.hlen : h.hlen + 2], "big"), int.from_bytes(pkt[h.hlen + 2 : h.hlen + 4], "big")
        assert (_int(sbn), _int(esi)) == (want_sbn, want_esi)
        sbn_seen.add(want_sbn)
        ob = s.objects[h.toi - 1] if h.toi else None
        assert _int(tl) == (len(ob.data) if ob else len(s.fdt_bytes))
        assert (_int(e), _int(b)) == (1000, 4)
        if h.toi == 0:
            assert (_int(iid), _int(ver)) == (0, 2)
        else:
            assert iid == "" and ver == ""
    assert sbn_seen >= {0, 1, 2, 3}


def test_tshark_reads_fdt_xml_as_sent(tmp_path: Path) -> None:
    s, _pkts, pcap = write_capture(tmp_path, tsi=5)
    rows = tshark_fields(pcap, ["xml.attribute"], ["-Y", "rmt-lct.toi==0", "-c", "1"])
    got = rows[0][0].split(",")
    root = ET.fromstring(s.fdt_bytes)
    want = [f'{k}="{v}"' for k, v in root.attrib.items()]
    for f in root:
        want += [f'{k}="{v}"' for k, v in f.attrib.items()]
    got = [a for a in got if not a.startswith("xmlns")]
    assert got == want
    assert 'Content-Location="dir/blocks.bin"' in got


def test_tshark_decodes_rs_cli_capture(tmp_path: Path) -> None:
    f = tmp_path / "payload.bin"
    f.write_bytes(bytes(range(256)) * 40)
    pcap = tmp_path / "cli.pcap"
    rc = main(["send", "--no-auth", str(f), "--protocol", "alc", "--group", f"239.255.9.9:{PORT}", "--fec", "rs",
               "--repair-ratio", "0.5", "--tsi", "4242", "--pcap", str(pcap), "--dry-run", "-q"])
    assert rc == 0
    rows = tshark_fields(pcap, ["rmt-lct.tsi", "rmt-lct.toi", "rmt-lct.codepoint", "rmt-fec.encoding_id",
                                "rmt-fec.fti.transfer_length"])
    data_rows = [r for r in rows if r[1] == "1"]
    assert data_rows and all(r[0] == "4242" for r in rows)
    assert {r[2] for r in data_rows} == {"5"} and {r[3] for r in data_rows} == {"5"}
    assert {r[4] for r in data_rows} == {"10240"}
    # 8 source symbols, 4 repair (ratio 0.5)
    assert len(data_rows) == 12
