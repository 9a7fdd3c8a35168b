#!/usr/bin/python3
"""Send one QMP command to a blockd (or qemu-storage-daemon) monitor and
print the reply:  qmp-shell.py SOCKET COMMAND ['{"json": "arguments"}']"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "tests", "functional"))
from qmp import QMP  # noqa: E402

if len(sys.argv) < 3:
    sys.exit(__doc__)
q = QMP(sys.argv[1])
args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
print(json.dumps(q.execute(sys.argv[2], args), indent=2))
