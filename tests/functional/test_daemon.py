"""The daemon starts, reports that it is ready and stops cleanly on signals."""
import signal
import subprocess

import pytest

from conftest import BLOCKD


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_exit_on_signal(blockd, sig):
    d = blockd()
    d.wait_ready()
    assert d.stop(sig) == 0
    assert d.stderr_path.read_text() == ""


def test_version():
    out = subprocess.run([BLOCKD, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("blockd version ")
    short = subprocess.run([BLOCKD, "-V"], capture_output=True, text=True, check=True)
    assert short.stdout == out.stdout


def test_help():
    out = subprocess.run([BLOCKD, "--help"], capture_output=True, text=True, check=True)
    assert "Usage: blockd" in out.stdout
    assert "--version" in out.stdout


def test_bad_argument_is_reported():
    out = subprocess.run([BLOCKD, "--no-such-option"], capture_output=True, text=True)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--no-such-option" in lines[0]
