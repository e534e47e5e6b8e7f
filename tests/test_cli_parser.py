"""Every freshly built parser carries the NORM and TESLA options: hooks must not remember
parsers by id() (ids are reused once a parser is garbage collected)."""

from __future__ import annotations

import gc

from tesla.cli.main import build_parser


def test_every_new_parser_has_the_hooked_options() -> None:
    argv = ["receive", "--group", "239.255.1.1:4000", "--out", "o", "--sender-key", "k.pub",
            "--clock-offset", "5", "--node-id", "2"]
    for _ in range(50):
        args = build_parser().parse_args(argv)
        assert args.sender_key == "k.pub" and args.node_id == 2
        gc.collect()
