"""Start real ComfyUI on loopback with this pack in custom_nodes/, and talk to it over HTTP."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, comfyui: Path, base: Path):
        self.base = base
        for sub in ("custom_nodes", "models/checkpoints", "models/controlnet", "models/loras", "models/tuneavideo",
                    "models/diffusion_models", "models/clip_vision", "models/text_encoders", "input", "output"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        pack = base / "custom_nodes" / "tuneavideo-comfy"
        if not pack.exists():
            pack.symlink_to(ROOT, target_is_directory=True)
        support = base / "custom_nodes" / "tav_test_tiny_sdxl.py"  # the toy SDXL checkpoint recognised (test-only)
        if not support.exists():
            support.symlink_to(Path(__file__).parent / "tav_test_tiny_sdxl.py")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", str(base), "--disable-auto-launch"],
            cwd=comfyui, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.time() + 900
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited at start-up:\n{self.log_text()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within 900 s:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=300) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return {"http_error": e.code, **json.loads(e.read() or b"{}")}

    def run(self, prompt: dict, timeout: float = 2400) -> dict:
        """Queue an API-format prompt and wait for it; returns its history entry (status + outputs)."""
        return self.wait(self.queue(prompt), timeout)

    def queue(self, prompt: dict) -> str:
        answer = self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
        if "prompt_id" not in answer:
            raise AssertionError(f"prompt refused: {json.dumps(answer)[:3000]}")
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 2400) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:
                return history[prompt_id]
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


def error_message(entry: dict) -> str | None:
    """The execution error of a history entry, or None if it succeeded."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_message')}"
    return None
