"""Runs a plan of picscope CLI calls in one process (so torch and the encoder load once), for tests that need
a private mount namespace: `unshare -m sh -c "mount … && python tests/fault_child.py PLAN.json"`.

A plan is a JSON list of steps: {"name": N, "cli": [argv…]} writes N.out, N.err and N.rc into the plan's
"out" folder; {"fill": FOLDER, "leave": BYTES} writes a filler file until only BYTES are free there;
{"rm": [paths]} deletes files; {"name": N, "serve": LIBRARY, "get": [paths]} serves the library on 127.0.0.1
(uvicorn) and writes each GET's status code to N.out, one per line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path


def main(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    out = Path(plan["out"])
    from picscope.cli import main as cli_main

    for step in plan["steps"]:
        if "cli" in step:
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                rc = cli_main(step["cli"])
            (out / f"{step['name']}.out").write_text(stdout.getvalue())
            (out / f"{step['name']}.err").write_text(stderr.getvalue())
            (out / f"{step['name']}.rc").write_text(str(rc))
        elif "fill" in step:
            st = os.statvfs(step["fill"])
            size = st.f_bavail * st.f_frsize - int(step["leave"])
            with open(Path(step["fill"]) / "filler", "wb") as fh:
                block = b"\0" * (1 << 16)
                while size > 0:
                    size -= fh.write(block[: min(len(block), size)])
        elif "serve" in step:
            import httpx

            from picscope.server.app import create_app
            from tests.server_helpers import live_server

            codes = []
            with live_server(create_app(step["serve"])) as base:
                for path in step["get"]:
                    codes.append(str(httpx.get(base + path, timeout=60).status_code))
            (out / f"{step['name']}.out").write_text("\n".join(codes))
        elif "rm" in step:
            for p in step["rm"]:
                Path(p).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
