"""The null-co and null-aio drivers against qemu-storage-daemon: the same
options, sizes, reads of zeroes over NBD, block status and node
descriptions."""
import subprocess

import pytest

from test_bitmaps_persistent import Daemon
from test_qsd_compat import both_sessions

MiB = 1024 * 1024


def session(prog, d, driver):
    x = Daemon(prog, d, None)
    q = x.q
    out = [q.execute("blockdev-add", {"driver": driver, "node-name": "n", "size": MiB,
                                      "read-zeroes": True, "latency-ns": 1000}),
           q.execute("blockdev-add", {"driver": driver, "node-name": "bad", "size": "x"})]
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
    assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": "e",
                                                         "node-name": "n", "name": "n",
                                                         "writable": True})
    uri = f"nbd+unix:///n?socket={d}/n.sock"
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 5 0 64k",
                        "-c", "read -P 0 0 64k", uri], capture_output=True, text=True)
    out.append(("io", r.returncode, "verification failed" in r.stdout))
    r = subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw", uri],
                       capture_output=True, text=True)
    out.append(("map", r.returncode, r.stdout))
    node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "n"][0]
    out.append((node["drv"], node["image"]["virtual-size"], node["ro"]))
    assert "Sanitizer" not in x.quit()
    return out


@pytest.mark.parametrize("driver", ["null-co", "null-aio"])
def test_null_drivers_match_qsd(driver):
    ours, theirs = both_sessions(session, driver)
    assert ours[2] == ("io", 0, False)
    assert ours == theirs
