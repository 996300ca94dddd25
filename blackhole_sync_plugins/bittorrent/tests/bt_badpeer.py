"""A peer that serves corrupt data: it claims every piece and reads them from a damaged copy.

    python bt_badpeer.py TORRENT CORRUPT_FILE

Uses libtorrent directly (resume-style ``have_pieces`` and ``no_verify_files``, so nothing is
checked before serving), listens on 127.0.0.1 only, prints ``{"event": "ready", "port": N}``
and runs until killed or until stdin closes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import libtorrent as lt


def main(torrent: Path, corrupt: Path) -> None:
    session = lt.session(
        {
            "listen_interfaces": "127.0.0.1:0",
            "outgoing_interfaces": "127.0.0.1",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "dht_bootstrap_nodes": "",
            "webtorrent_stun_server": "",
            "allow_multiple_connections_per_ip": True,
            "alert_mask": 0,
        }
    )
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent.read_bytes())
    params.save_path = str(corrupt.parent)
    if corrupt.name != params.ti.name():
        params.renamed_files = {0: corrupt.name}
    params.have_pieces = [True] * params.ti.num_pieces()
    params.flags |= lt.torrent_flags.no_verify_files
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    session.add_torrent(params)
    print(json.dumps({"event": "ready", "port": session.listen_port()}), flush=True)
    sys.stdin.read()
    session.pause()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
