"""The deployment files: the systemd unit, the Dockerfile and the Kubernetes manifests.

They must agree with the gateway they deploy: ports and probe paths with the
configuration defaults and the admin listener, the configuration they ship with
`dlp-gateway check-config`, the hardening with what the gateway needs to run.
Docker cannot build here, so the Dockerfile is checked statically, and its
HEALTHCHECK command is run against a real gateway.
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config, parse_listen
from gateway.server import Gateway
from tests.conftest import SENDER, make_message
from tests.support import BIN, REPO, GatewayProcess, Sink, smtp_route, wait_until

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "dlp-gateway.service"
SYSTEMD_CONFIG = DEPLOY / "systemd" / "gateway.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKER_CONFIG = DEPLOY / "docker" / "gateway.yaml"
K8S = DEPLOY / "kubernetes"
K8S_CONFIG = K8S / "gateway.yaml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
CONFIG_PATH = "/etc/dlp-gateway/gateway.yaml"
SERVE = ["dlp-gateway", "serve", "--config", CONFIG_PATH]
DRAIN_SECONDS = inspect.signature(Gateway.stop).parameters["grace"].default


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "dlp-gateway"), "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=120)


def default_ports() -> dict[str, int]:
    defaults = load_config()
    ports = {"smtp": defaults.server.smtp_listen, "lmtp": defaults.server.lmtp_listen, "admin": defaults.admin.listen}
    return {name: parse_listen(listen)[1] for name, listen in ports.items()}  # type: ignore[index]


# --- systemd --------------------------------------------------------------------------------

def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: sections of KEY=VALUE lines, a key may repeat, # and ; comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path}:{number}: not KEY=VALUE inside a section: {line!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(s|sec|min|m)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) in ("min", "m") else 1)


def test_the_unit_runs_serve_unprivileged_with_the_hardening() -> None:
    unit = parse_unit(UNIT)
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert set(unit) == {"Unit", "Service", "Install"}
    assert shlex.split(service["ExecStart"])[1:] == SERVE[1:]
    assert service["ExecStart"].startswith("/") and service["ExecStart"].split()[0].endswith("/dlp-gateway")
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "", "root", "0")
    expected = {
        "ProtectSystem": "strict", "PrivateTmp": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "MemoryDenyWriteExecute": "yes", "Restart": "on-failure", "KillMode": "mixed", "ProtectHome": "yes",
        "StateDirectory": "dlp-gateway", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
    }
    assert {k: service.get(k) for k in expected} == expected
    assert service["RestrictAddressFamilies"].split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert "@system-service" in unit["Service"]["SystemCallFilter"][0].split()
    assert "ProcSubset" not in service  # prometheus-client's process_* metrics read /proc/stat
    # The drain (Gateway.stop's grace) fits inside the stop timeout, with time to stop the workers.
    assert seconds(service["TimeoutStopSec"]) >= DRAIN_SECONDS + 30
    assert service["WorkingDirectory"] == "/var/lib/dlp-gateway"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def writable_dirs(unit: dict[str, dict[str, list[str]]]) -> list[Path]:
    service = unit["Service"]
    dirs = [Path(p.lstrip("-")) for v in service.get("ReadWritePaths", []) for p in v.split()]
    dirs += [Path("/var/lib") / d for v in service.get("StateDirectory", []) for d in v.split()]
    dirs += [Path("/var/log") / d for v in service.get("LogsDirectory", []) for d in v.split()]
    return dirs


def test_the_systemd_example_configuration_is_valid_and_writes_only_where_the_unit_allows() -> None:
    out = check_config(SYSTEMD_CONFIG)
    assert out.returncode == 0, out.stderr
    config = load_config(SYSTEMD_CONFIG)
    allowed = writable_dirs(parse_unit(UNIT))
    written = [Path(config.storage.quarantine_dir), Path(config.audit.path),
               Path(config.storage.database_url.removeprefix("sqlite:///"))]
    for path in written:
        assert path.is_absolute(), f"{path}: the CLI, run from any directory, must find the same files"
        assert any(path.is_relative_to(d) for d in allowed), f"{path} is not writable under ProtectSystem=strict"
    assert parse_listen(config.admin.listen)[0] == "127.0.0.1"  # type: ignore[index]


@pytest.fixture
def installed_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's gateway (verify checks it is executable)."""
    path = tmp_path / "dlp-gateway.service"
    path.write_text(UNIT.read_text().replace("/opt/dlp-gateway/.venv/bin/dlp-gateway", str(BIN / "dlp-gateway")))
    return path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(installed_unit: Path) -> None:
    out = subprocess.run(["systemd-analyze", "verify", str(installed_unit)], capture_output=True, text=True,
                         timeout=120)
    # Unknown or misspelt keys are only warnings ("Unknown key ..., ignoring"): none is allowed.
    assert out.returncode == 0 and out.stderr.strip() == "" and out.stdout.strip() == "", out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_security_rates_the_unit_well_exposed_below_2(installed_unit: Path) -> None:
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(installed_unit)],
                         capture_output=True, text=True, timeout=120)
    if "--offline" in out.stderr and "unrecognized" in out.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    assert float(match.group(1)) < 2.0, out.stdout


# MemoryDenyWriteExecute=yes: the kernel's PR_SET_MDWE (Linux 6.3+) refuses the same mappings
# (writable and executable, or made executable later); it is inherited across fork and exec.
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
MDWE_EXEC = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"assert libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())\n"
    f"assert libc.prctl({PR_GET_MDWE}, 0, 0, 0, 0) == {PR_MDWE_REFUSE_EXEC_GAIN}\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


# Exit 0 when a writable and executable mapping is refused (PROT_READ|PROT_WRITE|PROT_EXEC = 7).
WX_PROBE = "import mmap\ntry:\n mmap.mmap(-1, 4096, prot=7)\nexcept OSError:\n raise SystemExit(0)\nraise SystemExit(3)"


def _mdwe_supported() -> bool:
    probe = subprocess.run([sys.executable, "-c", MDWE_EXEC, sys.executable, "-c", WX_PROBE],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


mdwe = pytest.mark.skipif(sys.platform != "linux" or not _mdwe_supported(),
                          reason="the kernel has no PR_SET_MDWE (Linux 6.3+) to stand in for MemoryDenyWriteExecute")


def _inspected_everywhere() -> bytes:
    """A message that wakes the name model (spaCy), ICU's confusables (lookalike domain), libmagic and
    the attachment readers."""
    import io
    import zipfile

    from docx import Document

    doc = io.BytesIO()
    document = Document()
    document.add_paragraph("OFFICIAL-SENSITIVE")
    document.add_paragraph("John Smith was diagnosed with HIV last year and is treated by the mental health team.")
    document.save(doc)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("notes.txt", "Mrs Patel's NHS number is 943 476 5919.\n")
    return make_message(
        body="Hello,\n\nJohn Smith was diagnosed with HIV and attends the mosque on Fridays.\n\nJane",
        to=["someone@counci1.example.gov.uk"],
        attachments=[("referral.docx", doc.getvalue(), "application/octet-stream"),
                     ("notes.zip", archive.getvalue(), "application/zip")],
    )


@mdwe
def test_scan_inspects_names_lookalikes_and_attachments_with_no_writable_executable_memory(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(_inspected_everywhere())
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"organisation": {"internal_domains": ["council.example.gov.uk"]}}))
    out = subprocess.run([sys.executable, "-c", MDWE_EXEC, str(BIN / "dlp-gateway"), "scan", "--config", str(config),
                          str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    kinds = {f["detector"] for f in record["findings"]}
    assert "special_category" in kinds, record   # spaCy found the named person
    assert any(f["category"] == "misaddressed" for f in record["findings"]), record   # ICU lookalike check ran
    assert any(f["location"].startswith("attachment:") for f in record["findings"]), record
    assert "Traceback" not in out.stderr


class MdweGateway(GatewayProcess):
    def start(self) -> MdweGateway:
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MDWE_EXEC, str(BIN / "dlp-gateway"), "serve", "--config", str(self.config_file)],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        if not wait_until(self._accepting, timeout=120):
            self.stop()
            raise RuntimeError(f"gateway did not start:\n{self.log_file.read_text()}")
        return self


@mdwe
def test_serve_relays_with_no_writable_executable_memory(tmp_path: Path, sink: Sink) -> None:
    gw = MdweGateway(tmp_path, {"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)},
                                "detectors": {"ner": {"preload": True}}}).start()
    try:
        with gw.smtp() as client:
            assert client.sendmail(SENDER, ["colleague@council.example.gov.uk"], make_message()) == {}
            client.sendmail(SENDER, ["someone@counci1.example.gov.uk"], _inspected_everywhere())
        assert wait_until(lambda: len(gw.audit()) == 2)
        assert sink.to("colleague@council.example.gov.uk")
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/readyz", timeout=30) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/metrics", timeout=30) as response:
            assert b"dlp_gateway_" in response.read()
    finally:
        gw.stop()
    log = gw.log_file.read_text()
    assert "Traceback" not in log and "Permission denied" not in log, log


# --- Docker -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str

    def json_or_words(self) -> list[str]:
        return json.loads(self.args) if self.args.startswith("[") else shlex.split(self.args)


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
    assert not pending, f"{path}: the last instruction ends in a line continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER", "WORKDIR",
         "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def test_the_dockerfile_parses_into_a_builder_and_a_slim_runtime() -> None:
    instructions = parse_dockerfile(DOCKERFILE)
    assert {i.keyword for i in instructions} <= KNOWN
    args = {i.args.split("=", 1)[0]: i.args.split("=", 1)[1] for i in instructions if i.keyword == "ARG" and "=" in i.args}
    builder, runtime = stages(instructions)
    bases = [s[0].args.split()[0].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", "")) for s in (builder, runtime)]
    assert bases == ["python:3.11-slim-bookworm"] * 2
    assert builder[0].args.split()[-2:] == ["AS", "builder"]
    build_runs = " ".join(i.args for i in builder if i.keyword == "RUN")
    for package in ("libicu-dev", "pkg-config", "build-essential"):
        assert package in build_runs
    runtime_runs = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert "libmagic1" in runtime_runs and "libicu72" in runtime_runs
    assert "libicu-dev" not in runtime_runs and "build-essential" not in runtime_runs
    assert any(i.keyword == "COPY" and "--from=builder" in i.args for i in runtime)


def test_the_image_runs_as_a_user_of_its_own() -> None:
    (_, runtime) = stages(parse_dockerfile(DOCKERFILE))
    users = [i.args for i in runtime if i.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    uid = int(users[-1].split(":")[0])
    k8s = k8s_documents()["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert k8s["runAsUser"] == uid and k8s["runAsNonRoot"] is True


def test_the_dockerfile_copies_files_that_exist_and_all_the_gateway_reads() -> None:
    copied: list[str] = []
    for ins in parse_dockerfile(DOCKERFILE):
        if ins.keyword in ("COPY", "ADD") and "--from=" not in ins.args:
            words = [w for w in ins.json_or_words() if not w.startswith("--")]
            for source in words[:-1]:
                assert (REPO / source).exists(), f"{DOCKERFILE}:{ins.line}: {source} is not in the repository"
                copied.append(source.rstrip("/"))
    # gateway/config.py and gateway/disclaimer.py read config/ beside the packages.
    assert {"gateway", "detectors", "config", "pyproject.toml", "README.md"} <= set(copied)
    assert "deploy/docker/gateway.yaml" in copied


def test_the_image_serves_with_the_mounted_configuration_on_the_default_ports() -> None:
    instructions = parse_dockerfile(DOCKERFILE)
    (_, runtime) = stages(instructions)

    def last(keyword: str) -> Instruction:
        return [i for i in runtime if i.keyword == keyword][-1]

    assert last("ENTRYPOINT").json_or_words() + last("CMD").json_or_words() == SERVE
    copy = [i.json_or_words() for i in runtime if i.keyword == "COPY" and "gateway.yaml" in i.args]
    assert copy == [["deploy/docker/gateway.yaml", CONFIG_PATH]]
    ports = default_ports()
    exposed = {int(p.split("/")[0]) for i in runtime if i.keyword == "EXPOSE" for p in i.args.split()}
    assert exposed == set(ports.values())
    config = load_config(DOCKER_CONFIG)
    assert parse_listen(config.server.smtp_listen) == ("0.0.0.0", ports["smtp"])
    assert parse_listen(config.server.lmtp_listen) == ("0.0.0.0", ports["lmtp"])
    assert parse_listen(config.admin.listen) == ("0.0.0.0", ports["admin"])
    health = last("HEALTHCHECK").args
    assert health.split("CMD", 1)[0].strip().startswith("--")
    assert f"http://127.0.0.1:{ports['admin']}/healthz" in health
    assert last("STOPSIGNAL").args == "SIGTERM"


def test_the_docker_configuration_passes_check_config() -> None:
    out = check_config(DOCKER_CONFIG)
    assert out.returncode == 0, out.stderr
    effective = yaml.safe_load(out.stdout)
    assert effective["audit"]["path"] == "-"
    assert effective["server"]["workers"] > 0   # 0 would count the host's cores


@pytest.mark.parametrize("path", [DOCKER_CONFIG, K8S_CONFIG], ids=["docker", "kubernetes"])
def test_an_admin_listener_beyond_loopback_lets_only_loopback_name_the_reviewer(path: Path) -> None:
    """/metrics and the probes need the admin port reachable; the review UI on it must not be
    open to the network, and only a proxy in the same container or pod may name the user."""
    import ipaddress

    admin = yaml.safe_load(path.read_text())["admin"]
    assert not ipaddress.ip_address(parse_listen(admin["listen"])[0]).is_loopback  # type: ignore[index]
    assert admin.get("users") or admin.get("proxy_user_header")
    assert admin.get("trusted_proxies")
    assert all(ipaddress.ip_network(n, strict=False).is_loopback for n in admin["trusted_proxies"])


def healthcheck_command(admin_port: int) -> list[str]:
    (_, runtime) = stages(parse_dockerfile(DOCKERFILE))
    health = [i for i in runtime if i.keyword == "HEALTHCHECK"][-1].args
    command = json.loads(health.split("CMD", 1)[1].strip())
    assert command[0] == "python"
    return [sys.executable] + [a.replace(":9101/", f":{admin_port}/") for a in command[1:]]


def test_the_healthcheck_command_passes_on_a_running_gateway_and_fails_on_a_stopped_one(
    gateway: GatewayProcess,
) -> None:
    command = healthcheck_command(gateway.admin_port)
    assert subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    gateway.stop()
    assert subprocess.run(command, capture_output=True, timeout=60).returncode != 0


# --- Kubernetes -------------------------------------------------------------------------------

def k8s_documents() -> dict[str, dict[str, Any]]:
    """Every manifest the kustomization lists, by kind (one of each)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    documents: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            assert doc["kind"] not in documents, f"two {doc['kind']}s"
            documents[doc["kind"]] = doc
    return documents


def test_every_kubernetes_file_parses_and_the_kustomization_lists_them_all() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")}
    generated = {f for g in kustomization["configMapGenerator"] for f in g["files"]}
    assert files == set(kustomization["resources"]) | generated | {"kustomization.yaml"}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], name
    kinds = set(k8s_documents())
    assert kinds >= {"Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor", "PersistentVolumeClaim"}
    assert k8s_documents()["ServiceMonitor"]["apiVersion"] == "monitoring.coreos.com/v1"
    assert generated == {"gateway.yaml"}


def container() -> dict[str, Any]:
    (c,) = k8s_documents()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def test_probes_and_ports_agree_with_the_configuration() -> None:
    docs = k8s_documents()
    config = yaml.safe_load(K8S_CONFIG.read_text())
    ports = default_ports()
    c = container()
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert named == {"smtp": ports["smtp"], "lmtp": ports["lmtp"], "admin": ports["admin"]}
    # Inside the pod every listener is on all addresses, on the default ports.
    assert config["admin"]["listen"] == f"0.0.0.0:{ports['admin']}"
    assert config["server"]["smtp_listen"] == f"0.0.0.0:{ports['smtp']}"
    assert config["server"]["lmtp_listen"] == f"0.0.0.0:{ports['lmtp']}"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["startupProbe"]["httpGet"]["port"] == "admin"
    assert c["args"] == SERVE[1:]
    deployment = docs["Deployment"]["spec"]
    assert deployment["replicas"] == 2
    assert deployment["template"]["spec"]["terminationGracePeriodSeconds"] >= DRAIN_SECONDS + 30
    pod_labels = deployment["template"]["metadata"]["labels"]
    service = docs["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["selector"]["matchLabels"].items() <= pod_labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} >= {
        (ports["lmtp"], "lmtp"), (ports["smtp"], "smtp")}
    monitor = docs["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # The job label Prometheus gives is the Service's name; the shipped alerts expect it.
    assert f'job="{service["metadata"]["name"]}"' in ALERTS.read_text()


def test_the_pod_is_locked_down_and_mounts_what_the_configuration_names() -> None:
    c = container()
    pod = k8s_documents()["Deployment"]["spec"]["template"]["spec"]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts[CONFIG_PATH]["subPath"] == "gateway.yaml"
    assert volumes[mounts[CONFIG_PATH]["name"]]["configMap"]["name"] == "dlp-gateway-config"
    config = yaml.safe_load(K8S_CONFIG.read_text())

    def mounted(path: str) -> dict[str, Any]:
        best = max((m for m in mounts if Path(path).is_relative_to(m)), key=len, default=None)
        assert best is not None, f"{path} is on the read-only root file system"
        return volumes[mounts[best]["name"]]

    assert "persistentVolumeClaim" in mounted(config["storage"]["quarantine_dir"])
    pvc = k8s_documents()["PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]   # every replica holds and releases
    for key_file in config["quarantine"]["keys"]:
        secret = mounted(key_file)["secret"]
        assert secret["defaultMode"] & 0o007 == 0   # the gateway refuses key files others can read
    ca = re.search(r"[?&]ca=([^&]+)", config["routes"]["secure"])
    assert ca and "secret" in mounted(ca.group(1))


def test_the_database_password_comes_from_a_secret_not_the_configmap() -> None:
    import sqlalchemy as sa

    from gateway.store import normalise_url

    config = yaml.safe_load(K8S_CONFIG.read_text())
    url = sa.engine.make_url(normalise_url(config["storage"]["database_url"]))
    assert url.drivername == "postgresql+psycopg" and url.password is None
    env = {e["name"]: e for e in container()["env"]}
    assert "secretKeyRef" in env["PGPASSWORD"]["valueFrom"]   # read by libpq itself


def test_the_configmap_configuration_passes_check_config(tmp_path: Path) -> None:
    """Key files live in a Secret in the cluster; here the same names are made with quarantine-keygen."""
    text = K8S_CONFIG.read_text()
    keys = yaml.safe_load(text)["quarantine"]["keys"]
    for key in keys:
        local = tmp_path / "keys" / Path(key).name
        made = subprocess.run([str(BIN / "dlp-gateway"), "quarantine-keygen", str(local)], capture_output=True,
                              text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        text = text.replace(key, str(local))
    local_config = tmp_path / "gateway.yaml"
    local_config.write_text(text)
    out = check_config(local_config)
    assert out.returncode == 0, out.stderr
    effective = yaml.safe_load(out.stdout)
    assert effective["storage"]["database_url"].startswith("postgresql://")
    assert effective["server"]["workers"] > 0
    assert effective["admin"]["listen"] == "0.0.0.0:9101"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_renders_the_manifests_with_the_generated_configmap() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rendered = {d["kind"]: d for d in yaml.safe_load_all(out.stdout)}
    configmap = rendered["ConfigMap"]
    assert configmap["metadata"]["name"].startswith("dlp-gateway-config-")
    assert configmap["data"]["gateway.yaml"] == K8S_CONFIG.read_text()
    volumes = rendered["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert [v["configMap"]["name"] for v in volumes if "configMap" in v] == [configmap["metadata"]["name"]]
    assert all(d["metadata"].get("namespace") == "dlp-gateway" for k, d in rendered.items() if k != "Namespace")
