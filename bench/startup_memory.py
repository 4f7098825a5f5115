"""Startup time and idle memory of the app against a bare Gradio hello-world, same run.

    .venv/bin/python bench/startup_memory.py [--runs 3] [--sessions 100]

For each server: time from process start until `/config` answers, and resident memory after a
short idle. Then, for the app only, memory added by N idle visitor sessions (each a real
headless-Chromium page that loads the app and leaves). Prints ratios app / hello-world
(target: startup and idle memory <= 1.5x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: E402

HELLO = """
import os
import gradio as gr
gr.Interface(lambda name: "Hello " + name, "text", "text").launch(
    server_name="127.0.0.1", server_port=int(os.environ["PORT"]), ssr_mode=False
)
"""


def rss_mb(pid: int) -> float:
    """Resident memory of one process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(
    command: list[str], env: dict[str, str], cwd: Path
) -> tuple[subprocess.Popen[bytes], float, str]:
    """Start a server; return it, seconds until /config answered, and its URL."""
    port = free_port()
    env = {**env, "PORT": str(port)}
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = started + 120
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return process, time.perf_counter() - started, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{command} did not start")


def base_env(workdir: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PYTHONPATH": str(REPO),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "LOG_PATH": str(workdir / "logs" / "app.log"),
        "OPENROUTER_BASE_URL": "http://127.0.0.1:9/api/v1",  # catalog fails fast: fallback
        "CATALOG_TIMEOUT_SECONDS": "1",
    }


def open_sessions(url: str, count: int) -> None:
    """Open `count` real browser sessions, one after another, each leaving when loaded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        for _ in range(count):
            context = browser.new_context()
            page = context.new_page()
            page.goto(url, wait_until="load")
            page.locator("#session-ready [data-ready]").wait_for(state="attached")
            context.close()
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=100)
    args = parser.parse_args()
    python = sys.executable
    results: dict[str, dict[str, list[float]]] = {
        "hello": {"startup": [], "rss": []},
        "app": {"startup": [], "rss": []},
    }
    with tempfile.TemporaryDirectory() as tmp:
        hello_script = Path(tmp) / "hello.py"
        hello_script.write_text(HELLO)
        for run in range(args.runs):
            for name, command in (
                ("hello", [python, str(hello_script)]),
                ("app", [python, str(REPO / "app.py")]),
            ):
                workdir = Path(tmp) / f"{name}-{run}"
                workdir.mkdir()
                process, seconds, _ = start(command, base_env(workdir), workdir)
                time.sleep(3)
                results[name]["startup"].append(seconds)
                results[name]["rss"].append(rss_mb(process.pid))
                process.terminate()
                process.wait(timeout=30)
        workdir = Path(tmp) / "sessions"
        workdir.mkdir()
        process, _, url = start([python, str(REPO / "app.py")], base_env(workdir), workdir)
        time.sleep(3)
        before = rss_mb(process.pid)
        open_sessions(url, args.sessions)
        time.sleep(2)
        after = rss_mb(process.pid)
        process.terminate()
        process.wait(timeout=30)

    def median(name: str, key: str) -> float:
        return statistics.median(results[name][key])

    startup_ratio = median("app", "startup") / median("hello", "startup")
    rss_ratio = median("app", "rss") / median("hello", "rss")
    print(
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores"
    )
    print("| server | startup to first response (s) | idle RSS (MB) |")
    print("|---|---:|---:|")
    for name, label in (("hello", "bare Gradio hello-world"), ("app", "OpenRouter Chat")):
        print(f"| {label} | {median(name, 'startup'):.2f} | {median(name, 'rss'):.0f} |")
    print(f"| ratio app / hello | {startup_ratio:.2f}x | {rss_ratio:.2f}x |")
    added = after - before
    per_session_kb = added / args.sessions * 1000
    print(
        f"\nRSS added by {args.sessions} idle browser sessions: {added:.1f} MB "
        f"({per_session_kb:.0f} KB per session; {before:.0f} -> {after:.0f} MB)"
    )
    for label, ratio in (("startup", startup_ratio), ("idle memory", rss_ratio)):
        print(
            f"target {label} <= 1.5x hello-world: {ratio:.2f}x {'PASS' if ratio <= 1.5 else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
