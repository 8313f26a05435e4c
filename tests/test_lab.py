"""`make lab` opens a working course: JupyterLab serves, with the nbgrader and ipywidgets extensions."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = [sys.executable, "-m", "jupyter"]


def test_lab_extensions_are_installed_and_enabled():
    listing = subprocess.run(JUPYTER + ["labextension", "list"], capture_output=True, text=True).stderr
    for extension in ("@jupyter/nbgrader", "@jupyter-widgets/jupyterlab-manager"):
        line = next((line for line in listing.splitlines() if extension in line), "")
        assert "enabled" in line and "OK" in line, listing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_lab_serves_the_course_with_formgrader(tmp_path):
    port, token = _free_port(), "dgmcourse-test"
    server = subprocess.Popen(
        JUPYTER + ["lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
                   f"--ServerApp.root_dir={ROOT}"] + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        assert urllib.request.urlopen(f"{base}/lab?token={token}", timeout=10).status == 200
        listing = json.load(urllib.request.urlopen(f"{base}/api/contents/lectures?token={token}", timeout=10))
        assert "01_vae.ipynb" in {item["name"] for item in listing["content"]}
        formgrader = urllib.request.urlopen(f"{base}/formgrader?token={token}", timeout=30)
        assert formgrader.status == 200 and b"formgrader" in formgrader.read().lower()
    finally:
        server.terminate()
        server.wait(timeout=30)
