"""Helpers shared by test modules of several folders (test modules never import each other)."""

from __future__ import annotations

import errno
import json
import pathlib
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import elpips
import lpips

NO_SPACE = "No space left on device"


def fail_second_checkpoint_write(monkeypatch) -> object:
    """Make the second atomic write of ``checkpoint.pt`` half-write its temporary file and raise ENOSPC, as a full
    disk does; returns the original ``Path.write_bytes`` (set it back to let a resume write)."""
    original = pathlib.Path.write_bytes
    writes = []

    def second_checkpoint_fails(path, data):
        if path.name.startswith(".checkpoint.pt."):
            writes.append(path)
            if len(writes) == 2:
                original(path, bytes(data)[:100])  # half written, as on a full disk
                raise OSError(errno.ENOSPC, NO_SPACE)
        return original(path, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", second_checkpoint_fails)
    return original


LPIPS_SLICES = {
    "vgg": [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)],
    "squeeze": [(0, 2), (2, 5), (5, 8), (8, 10), (10, 11), (11, 12), (12, 13)],
    "alex": [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)],
}


def lpips_peer(net: str, metric: elpips.Metric) -> lpips.LPIPS:
    """The ``lpips`` package's model with the same backbone weights as ``metric``."""
    peer = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    state = {}
    for key, value in metric.backbone.state_dict().items():
        _, index, rest = key.split(".", 2)
        slice_number = next(n for n, (lo, hi) in enumerate(LPIPS_SLICES[net]) if lo <= int(index) < hi)
        state[f"slice{slice_number + 1}.{index}.{rest}"] = value
    peer.net.load_state_dict(state, strict=True)
    return peer.eval()



def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


class References(HTMLParser):
    """Every ``src``/``href`` of an HTML page, plus the JSON frame list of the viewer."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self._in_frame_list = False
        self.frame_list: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.links += [attributes[key] for key in ("src", "href") if attributes.get(key)]
        self._in_frame_list = tag == "script" and attributes.get("id") == "frame-list"

    def handle_data(self, data):
        if self._in_frame_list:
            self.frame_list = json.loads(data)
            self._in_frame_list = False


def missing_references(run_dir: Path) -> tuple[list[str], References]:
    """Parse ``run_dir/index.html``; return the referenced files that do not exist (and the parser)."""
    parser = References()
    parser.feed((run_dir / "index.html").read_text(encoding="utf-8"))
    referenced = parser.links + parser.frame_list
    assert all("://" not in link and not link.startswith("/") for link in referenced)  # offline, relative
    return [link for link in referenced if not (run_dir / link).is_file()], parser
