"""The files that deploy the app (Space card, Dockerfile, pre-commit) say what they must."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatlib.config import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parent.parent
SPACE_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def pinned(requirements: str, package: str) -> str:
    """The exact version `package` (extras allowed) is pinned to in a requirements file."""
    text = (ROOT / requirements).read_text(encoding="utf-8")
    pattern = rf"^{re.escape(package)}(?:\[[^\]]*\])?==([^\s;#]+)"
    match = re.search(pattern, text, flags=re.MULTILINE | re.IGNORECASE)
    assert match, f"{package} is not pinned with == in {requirements}"
    return match.group(1)


# --------------------------------------------------------------- Space card


@pytest.fixture(scope="module")
def front_matter() -> dict[str, Any]:
    """README.md's YAML front matter, which configures the Hugging Face Space."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.DOTALL)
    assert match, "README.md must start with a --- YAML front-matter block ---"
    data = yaml.safe_load(match.group(1))
    assert isinstance(data, dict)
    return data


def test_space_card_names_and_colours(front_matter: dict[str, Any]) -> None:
    assert isinstance(front_matter.get("title"), str) and front_matter["title"].strip()
    assert isinstance(front_matter.get("emoji"), str) and front_matter["emoji"].strip()
    assert front_matter.get("colorFrom") in SPACE_COLORS
    assert front_matter.get("colorTo") in SPACE_COLORS
    assert isinstance(front_matter.get("license"), str) and front_matter["license"].strip()


def test_space_runs_the_pinned_gradio_on_python_3_12(front_matter: dict[str, Any]) -> None:
    assert front_matter.get("sdk") == "gradio"
    assert str(front_matter.get("sdk_version")) == pinned("requirements.txt", "gradio")
    # Unquoted, YAML reads 3.12 as a float (and 3.10 as 3.1): it must be a string.
    assert front_matter.get("python_version") == "3.12"
    assert front_matter.get("app_file") == "app.py"
    assert (ROOT / front_matter["app_file"]).is_file()


def test_space_card_description_and_login(front_matter: dict[str, Any]) -> None:
    description = front_matter.get("short_description")
    assert isinstance(description, str) and 0 < len(description) <= 60
    assert front_matter.get("hf_oauth") is True


# ---------------------------------------------------------------- Dockerfile


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def _index(instructions: list[tuple[str, str]], keyword: str, contains: str = "") -> int:
    for i, (name, arguments) in enumerate(instructions):
        if name == keyword and contains in arguments:
            return i
    raise AssertionError(f"no {keyword} {contains!r} in the Dockerfile")


def _env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, arguments in instructions:
        if name == "ENV":
            for item in shlex.split(arguments):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_image_is_python_3_12_slim_running_as_a_user(dockerfile: list[tuple[str, str]]) -> None:
    bases = [arguments for name, arguments in dockerfile if name == "FROM"]
    assert len(bases) == 1
    assert re.fullmatch(r"python:3\.12-slim(@sha256:[0-9a-f]{64})?", bases[0])
    users = [arguments for name, arguments in dockerfile if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert _index(dockerfile, "USER") < _index(dockerfile, "CMD")


def test_dependencies_are_installed_before_the_code_is_copied(
    dockerfile: list[tuple[str, str]],
) -> None:
    copy_requirements = _index(dockerfile, "COPY", "requirements.txt")
    install = _index(dockerfile, "RUN", "pip install")
    assert "-r requirements.txt" in dockerfile[install][1]
    copy_code = next(
        i for i, (name, args) in enumerate(dockerfile) if name == "COPY" and args.startswith(". ")
    )
    assert copy_requirements < install < copy_code


def test_image_serves_port_7860_with_a_healthcheck(dockerfile: list[tuple[str, str]]) -> None:
    env = _env(dockerfile)
    assert "7860" in dockerfile[_index(dockerfile, "EXPOSE")][1].split()
    assert env.get("PORT", str(Settings().port)) == "7860"
    assert env.get("HOST") == "0.0.0.0"
    healthcheck = dockerfile[_index(dockerfile, "HEALTHCHECK")][1]
    assert "127.0.0.1" in healthcheck and ("7860" in healthcheck or "PORT" in healthcheck)
    assert "curl" not in healthcheck, "python:3.12-slim has no curl"
    cmd = dockerfile[_index(dockerfile, "CMD")][1]
    assert json.loads(cmd) == ["python", "app.py"]


def test_the_image_binds_every_interface_while_a_local_run_does_not(
    dockerfile: list[tuple[str, str]],
) -> None:
    # Without HOST in the image, the container would listen on its own loopback only and
    # the published port would answer nothing.
    env = _env(dockerfile)
    assert Settings.from_env({}, env_file=None).host == "127.0.0.1"
    assert Settings.from_env({"HOST": env["HOST"]}, env_file=None).host == "0.0.0.0"
    healthcheck = dockerfile[_index(dockerfile, "HEALTHCHECK")][1]
    assert "127.0.0.1" in healthcheck  # reachable from inside the container either way


def test_image_keeps_data_in_a_volume_the_user_owns(dockerfile: list[tuple[str, str]]) -> None:
    env = _env(dockerfile)
    assert "DATA_DIR" in {var.name for var in ENV_VARS}
    data_dir = env.get("DATA_DIR")
    assert data_dir == "/data"
    volume = _index(dockerfile, "VOLUME")
    assert data_dir in dockerfile[volume][1].replace('"', " ").replace("[", " ").split()
    chown = _index(dockerfile, "RUN", "chown")
    assert data_dir in dockerfile[chown][1].split()
    assert chown < volume, "changes after VOLUME are discarded"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("GRADIO_ANALYTICS_ENABLED") == "False"


def test_dockerignore_keeps_secrets_data_and_caches_out() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    entries = {line.strip().rstrip("/") for line in lines if line.strip()}
    entries = {e for e in entries if not e.startswith("#")}
    required = {".env", ".data", "logs", ".venv", ".git", "tests/artifacts"}
    required |= {".mypy_cache", ".ruff_cache", ".pytest_cache"}
    assert required <= entries
    assert "__pycache__" in entries or "**/__pycache__" in entries


# ---------------------------------------------------------------- pre-commit


@pytest.fixture(scope="module")
def hooks() -> list[dict[str, Any]]:
    """Every hook of .pre-commit-config.yaml."""
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    assert isinstance(config, dict) and config.get("repos")
    for repo in config["repos"]:
        assert repo.get("repo") == "local", "remote hook repos need the network"
    return [hook for repo in config["repos"] for hook in repo["hooks"]]


def test_pre_commit_hooks_run_offline_from_the_dev_tools(hooks: list[dict[str, Any]]) -> None:
    assert all(hook.get("language") == "system" for hook in hooks)
    entries = [str(hook["entry"]) for hook in hooks]
    for command in (
        "ruff check",
        "ruff format",
        "mypy",
        "end-of-file-fixer",
        "trailing-whitespace-fixer",
        "detect-private-key",
    ):
        assert any(command in entry for entry in entries), f"no hook runs {command}"
    for package in ("pre-commit", "pre-commit-hooks", "ruff", "mypy"):
        pinned("requirements-dev.txt", package)


# ------------------------------------------------- replicas: deploy/compose.yaml + haproxy.cfg

DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """deploy/compose.yaml as YAML (variables like ${X:-default} stay as written)."""
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _service_env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {str(key): str(value) for key, value in environment.items()}


def test_compose_runs_postgres_redis_replicas_and_a_proxy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"postgres", "redis", "app", "proxy"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["proxy"]["image"].startswith("haproxy:2.8")
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    app = services["app"]
    assert app["build"]["context"] == ".."
    assert (
        DEPLOY / app["build"]["context"] / app["build"].get("dockerfile", "Dockerfile")
    ).is_file()
    # `--scale app=N` needs replicas without a fixed name or a published host port.
    assert "container_name" not in app and "ports" not in app
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_replica_shares_the_database_the_limits_and_the_secret(
    compose: dict[str, Any],
) -> None:
    env = _service_env(compose["services"]["app"])
    assert env["HOST"] == "0.0.0.0"
    assert re.fullmatch(r"postgresql://chat:[^@]+@postgres:5432/chat", env["DATABASE_URL"])
    assert env["RATE_LIMIT_STORAGE_URI"] == "redis://redis:6379/0"
    # Required with no default: compose refuses to start without it.
    assert re.fullmatch(r"\$\{BROWSER_STATE_SECRET:\?[^}]+\}", env["BROWSER_STATE_SECRET"])
    assert env["OPENROUTER_API_KEY"].startswith("${OPENROUTER_API_KEY")
    known = {var.name for var in ENV_VARS}
    # DATABASE_URL until the SQL store lists it in chatlib.config.ENV_VARS.
    assert set(env) - known <= {"DATABASE_URL"}


def test_replicas_believe_x_forwarded_for_only_from_the_proxy(compose: dict[str, Any]) -> None:
    from ipaddress import ip_address, ip_network

    from chatlib.ratelimit import parse_trusted_proxies

    services = compose["services"]
    network_name, proxy_network = next(iter(services["proxy"]["networks"].items()))
    proxy_address = ip_address(proxy_network["ipv4_address"])
    ipam = compose["networks"][network_name]["ipam"]["config"][0]
    subnet, dynamic = ip_network(ipam["subnet"]), ip_network(ipam["ip_range"])
    assert proxy_address in subnet and proxy_address not in dynamic
    trusted = parse_trusted_proxies(_service_env(services["app"])["TRUSTED_PROXIES"])
    assert trusted and any(proxy_address in network for network in trusted)
    assert all(network.subnet_of(subnet) for network in trusted)
    for name in ("postgres", "redis", "app"):
        networks = services[name]["networks"]
        assert network_name in networks, f"{name} is not on the proxy's network"


def test_the_proxy_publishes_7860_with_the_checked_in_config(compose: dict[str, Any]) -> None:
    proxy = compose["services"]["proxy"]
    assert "7860:7860" in [str(port) for port in proxy["ports"]]
    source, _, target = proxy["volumes"][0].partition(":")
    assert (DEPLOY / source).resolve() == DEPLOY / "haproxy.cfg"
    assert target.startswith("/usr/local/etc/haproxy/haproxy.cfg")


def _haproxy_directives() -> dict[str, list[str]]:
    """section name ("defaults", "backend app", ...) -> its directive lines."""
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in (DEPLOY / "haproxy.cfg").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = line.strip()
            sections[current] = []
        else:
            sections[current].append(" ".join(line.split()))
    return sections


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match, value
    return int(match.group(1)) * units[match.group(2) or "ms"]


def test_haproxy_keeps_each_browser_on_its_replica_and_streams_for_long() -> None:
    sections = _haproxy_directives()
    defaults, backend = sections["defaults"], sections["backend app"]
    assert "bind :7860" in sections["frontend web"]
    assert "balance roundrobin" in backend
    cookie = next(line for line in backend if line.startswith("cookie "))
    assert cookie.split()[1:5] == ["SRV", "insert", "indirect", "nocache"]
    assert "option forwardfor" in defaults
    # Without it haproxy holds small SSE writes back (tests/test_proxy.py measures it).
    assert "option http-no-delay" in backend
    assert "option redispatch" in defaults
    timeouts = {
        line.split()[1]: _seconds(line.split()[2])
        for line in defaults
        if line.startswith("timeout ")
    }
    for name in ("server", "tunnel", "client"):
        assert timeouts[name] >= 600, f"timeout {name} would cut long SSE answers"
    assert any(line.startswith("option httpchk GET /gradio_api/info") for line in backend)
    template = next(line for line in backend if line.startswith("server-template "))
    assert template.split()[2:4] == ["10", "app:7860"]
    assert "resolvers docker" in template and "init-addr none" in template
    assert "nameserver dns 127.0.0.11:53" in sections["resolvers docker"]


def _haproxy_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_deploy_config_and_its_loopback_variant(tmp_path: Path) -> None:
    from tests.proxy_server import loopback_config

    # init-addr none: the check needs no DNS for `app`.
    deployed = _haproxy_check(DEPLOY / "haproxy.cfg")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    variant = tmp_path / "loopback.cfg"
    variant.write_text(
        loopback_config(["127.0.0.1:1", "127.0.0.1:2"], 3, tmp_path / "admin.sock"),
        encoding="utf-8",
    )
    checked = _haproxy_check(variant)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_make_test_installs_what_the_replica_tests_start() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nsystem-deps:", 1)[1].split("\n\n", 1)[0]
    for package in ("postgresql", "haproxy", "redis-server", "chromium"):
        assert f'missing="$$missing {package}"' in recipe
