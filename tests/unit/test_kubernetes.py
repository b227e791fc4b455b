"""Kubernetes pods behind processes (probes/kubernetes.py): pod UIDs and container ids from cgroup
paths as containerd, cri-o and docker write them under the systemd and cgroupfs drivers, workload
names from pod metadata as the controllers set it, and the LIST of a node's pods against a local
HTTPS server standing in for the API server (no cluster, no network)."""

import json
import shutil
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from probes import kubernetes
from probes.identity import ServiceNames, SocketTable
from probes.kubernetes import NodePods, PodCgroup, PodLister, parse_cgroup, workload_name

UID = "1f2e3d4c-5b6a-7f8e-9d0c-1b2a3f4e5d6c"
UID_ = UID.replace("-", "_")  # the systemd driver's spelling
STATIC_UID = "5d4b0c0c9f3a8b6e1c2d3e4f5a6b7c8d"  # a static pod's cgroup: its manifest's hash
CID = "3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e"
IN_POD = PodCgroup(UID, CID)

CGROUPS = [
    (
        "containerd, systemd driver, cgroup v2, burstable",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        IN_POD,
    ),
    (
        "containerd, systemd driver, guaranteed (no QoS slice)",
        f"0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        IN_POD,
    ),
    (
        "containerd, cgroupfs driver, cgroup v1",
        f"12:hugetlb:/kubepods/besteffort/pod{UID}/{CID}\n"
        f"4:memory:/kubepods/besteffort/pod{UID}/{CID}\n"
        f"1:name=systemd:/kubepods/besteffort/pod{UID}/{CID}\n0::/\n",
        IN_POD,
    ),
    ("containerd, cgroupfs driver, cgroup v2 (k3s)", f"0::/kubepods/burstable/pod{UID}/{CID}\n", IN_POD),
    ("containerd, cgroupfs driver, guaranteed", f"0::/kubepods/pod{UID}/{CID}\n", IN_POD),
    (
        "cri-o, systemd driver",
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope\n",
        IN_POD,
    ),
    (
        "cri-o's conmon: in the pod, no container",
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{CID}.scope\n",
        PodCgroup(UID, None),
    ),
    (
        "docker (cri-dockerd), systemd driver, cgroup v1",
        f"11:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{CID}.scope\n"
        f"1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{CID}.scope\n",
        IN_POD,
    ),
    (
        "kind: the kubelet's cgroup root under kubelet.slice",
        "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        IN_POD,
    ),
    (
        "read from a private cgroup namespace, systemd driver",
        f"0::/../../../kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        IN_POD,
    ),
    (
        "read from a private cgroup namespace, cgroupfs driver",
        f"0::/../../../besteffort/pod{UID}/{CID}\n",
        IN_POD,
    ),
    (
        "a static pod (its manifest's hash as UID)",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/cri-containerd-{CID}.scope\n",
        PodCgroup(STATIC_UID, CID),
    ),
    (
        "a process in the pod's own cgroup",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice\n",
        PodCgroup(UID, None),
    ),
    ("plain docker, systemd driver", f"0::/system.slice/docker-{CID}.scope\n", None),
    ("plain docker, cgroup v1", f"12:pids:/docker/{CID}\n0::/\n", None),
    ("a podman pod", f"0::/machine.slice/machine-libpod_pod_{CID}.slice/libpod-{CID}.scope\n", None),
    ("the kubelet itself", "0::/system.slice/kubelet.service\n", None),
    ("a systemd unit named like a pod", "0::/system.slice/pod-checkout.service\n", None),
    ("the root cgroup", "0::/\n", None),
    ("an empty file", "", None),
]


def pod(name, namespace="shop", uid=UID, owner=None, labels=None, annotations=None):
    """Pod metadata as the API server returns it in a PartialObjectMetadataList."""
    metadata = {"name": name, "namespace": namespace, "uid": uid, "labels": labels or {}}
    if owner:
        kind, owner_name = owner
        metadata["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": kind, "name": owner_name, "uid": "0", "controller": True}
        ]
    if annotations:
        metadata["annotations"] = annotations
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}


WORKLOADS = [
    (
        "a Deployment's pod (through its ReplicaSet)",
        pod(
            "frontend-7d4b9c6f5-x2x9z",
            owner=("ReplicaSet", "frontend-7d4b9c6f5"),
            labels={"pod-template-hash": "7d4b9c6f5"},
        ),
        "shop/frontend",
    ),
    (
        "a Deployment with dashes in its name",
        pod(
            "order-api-v2-5f9c-abcde",
            owner=("ReplicaSet", "order-api-v2-5f9c"),
            labels={"pod-template-hash": "5f9c"},
        ),
        "shop/order-api-v2",
    ),
    (
        "a ReplicaSet made by hand (no pod-template-hash)",
        pod("cache-q8zfn", owner=("ReplicaSet", "cache")),
        "shop/cache",
    ),
    ("a StatefulSet's pod", pod("postgres-0", owner=("StatefulSet", "postgres")), "shop/postgres"),
    (
        "a DaemonSet's pod",
        pod("obsweb-agent-7xk2p", namespace="obsweb", owner=("DaemonSet", "obsweb-agent")),
        "obsweb/obsweb-agent",
    ),
    ("a Job's pod", pod("migrate-4kq9z", owner=("Job", "migrate")), "shop/migrate"),
    (
        "a CronJob's pod (through its Job)",
        pod("report-29012345-abcde", owner=("Job", "report-29012345")),
        "shop/report",
    ),
    (
        "a static pod's mirror",
        pod("kube-apiserver-node-a", namespace="kube-system", owner=("Node", "node-a")),
        "kube-system/kube-apiserver",
    ),
    ("a pod without a controller", pod("debug-shell"), "shop/debug-shell"),
    (
        "a pod in the default namespace (no namespace field)",
        {"metadata": {"name": "one-off", "uid": UID}},
        "default/one-off",
    ),
]


@pytest.mark.parametrize("what, text, expected", CGROUPS, ids=[what for what, _, _ in CGROUPS])
def test_it_finds_the_pod_and_container_of_a_cgroup_path(what, text, expected):
    assert parse_cgroup(text) == expected


@pytest.mark.parametrize("what, item, name", WORKLOADS, ids=[what for what, _, _ in WORKLOADS])
def test_it_names_a_pod_by_namespace_and_workload(what, item, name):
    assert workload_name(item["metadata"]) == name


def test_it_ignores_owners_that_are_not_the_controller():
    item = pod("worker-1", owner=("StatefulSet", "worker"))
    item["metadata"]["ownerReferences"].insert(
        0, {"kind": "ConfigMap", "name": "settings", "controller": False}
    )
    assert workload_name(item["metadata"]) == "shop/worker"


def test_it_caps_the_name_like_otel_service_name():
    assert len(workload_name(pod("x" * 253, namespace="n" * 63)["metadata"])) == kubernetes.MAX_NAME_LENGTH


class FakeLister:
    """A LIST that answers `pods` (or raises `error`) and counts its calls."""

    def __init__(self, pods=(), error=None):
        self.pods, self.error, self.calls = list(pods), error, 0

    def __call__(self):
        self.calls += 1
        if self.error:
            raise self.error
        return self.pods


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


FRONTEND = pod(
    "frontend-7d4b9c6f5-x2x9z",
    owner=("ReplicaSet", "frontend-7d4b9c6f5"),
    labels={"pod-template-hash": "7d4b9c6f5"},
)
FRONTEND_CGROUP = CGROUPS[0][1]


def test_it_names_a_process_by_its_pod_once_listed():
    pods = NodePods(FakeLister([FRONTEND]))
    pods.refresh()
    assert pods.service_name(FRONTEND_CGROUP) == ("shop/frontend", True)


def test_it_answers_at_once_for_a_pod_not_known_yet_and_lists_in_the_background():
    listed = threading.Event()
    release = threading.Event()

    def slow_list():
        listed.set()
        assert release.wait(5)
        return [FRONTEND]

    pods = NodePods(slow_list)
    assert pods.service_name(FRONTEND_CGROUP) == (None, False)  # not blocked by the LIST
    assert listed.wait(5)
    release.set()
    pods.wait(5)
    assert pods.service_name(FRONTEND_CGROUP) == ("shop/frontend", True)


def test_it_does_not_list_for_processes_outside_pods():
    lister = FakeLister([FRONTEND])
    pods = NodePods(lister)
    assert pods.service_name("0::/system.slice/nginx.service\n") == (None, True)
    pods.wait(5)
    assert lister.calls == 0


def test_it_lists_at_most_once_per_interval_however_many_pods_are_unknown():
    lister, clock = FakeLister([]), Clock()
    pods = NodePods(lister, clock=clock)
    for _ in range(3):
        assert pods.service_name(FRONTEND_CGROUP) == (None, False)
        pods.wait(5)
    assert lister.calls == 1
    clock.now += kubernetes.REFRESH_MIN_INTERVAL_S
    lister.pods = [FRONTEND]
    pods.service_name(FRONTEND_CGROUP)
    pods.wait(5)
    assert lister.calls == 2
    assert pods.service_name(FRONTEND_CGROUP) == ("shop/frontend", True)


def test_it_names_static_pods_by_their_mirror_annotation():
    mirror = pod(
        "etcd-node-a",
        namespace="kube-system",
        uid="0b6a1f2e-0000-4000-8000-000000000001",
        owner=("Node", "node-a"),
        annotations={kubernetes.MIRROR_ANNOTATION: STATIC_UID},
    )
    pods = NodePods(FakeLister([mirror]))
    pods.refresh()
    static_cgroup = next(text for what, text, _ in CGROUPS if what.startswith("a static pod"))
    assert pods.service_name(static_cgroup) == ("kube-system/etcd", True)


def test_it_forgets_pods_gone_from_the_node():
    lister = FakeLister([FRONTEND])
    pods = NodePods(lister)
    pods.refresh()
    lister.pods = []
    pods.refresh()
    assert pods.service_name(FRONTEND_CGROUP) == (None, False)


def test_it_counts_failed_lists_and_logs_them_once_until_one_succeeds(caplog):
    lister, clock = FakeLister(error=OSError("GET https://10.96.0.1:443/api/v1/pods: HTTP 403")), Clock()
    pods = NodePods(lister, clock=clock)
    with caplog.at_level("INFO", logger="probes.kubernetes"):
        for _ in range(3):
            pods.service_name(FRONTEND_CGROUP)
            pods.wait(5)
            clock.now += kubernetes.REFRESH_MIN_INTERVAL_S
        assert (pods.errors, lister.calls) == (3, 3)
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "HTTP 403" in caplog.records[0].getMessage()
        lister.error, lister.pods = None, [FRONTEND]
        pods.service_name(FRONTEND_CGROUP)
        pods.wait(5)
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert pods.service_name(FRONTEND_CGROUP) == ("shop/frontend", True)


# --- ServiceNames (probes/identity.py) with and without a cluster


def proc_with_pod_process(tmp_path: Path, pid: int, cgroup: str, environ: bytes = b"") -> Path:
    (tmp_path / str(pid)).mkdir()
    (tmp_path / str(pid) / "cgroup").write_text(cgroup)
    (tmp_path / str(pid) / "comm").write_text("node\n")
    (tmp_path / str(pid) / "environ").write_bytes(environ)
    return tmp_path


def test_it_names_a_pod_process_by_namespace_and_deployment_in_a_cluster(tmp_path):
    proc = proc_with_pod_process(tmp_path, 4242, FRONTEND_CGROUP)
    pods = NodePods(FakeLister([FRONTEND]))
    pods.refresh()
    assert ServiceNames(SocketTable(proc=proc), proc=proc, pods=pods).name_for(4242) == "shop/frontend"


def test_it_keeps_container_names_outside_a_cluster(tmp_path):
    proc = proc_with_pod_process(tmp_path, 4242, FRONTEND_CGROUP)
    assert (
        ServiceNames(SocketTable(proc=proc), proc=proc, pods=None).name_for(4242) == f"container-{CID[:12]}"
    )


def test_it_prefers_otel_service_name_to_the_pod(tmp_path):
    proc = proc_with_pod_process(
        tmp_path, 4242, FRONTEND_CGROUP, environ=b"PATH=/bin\0OTEL_SERVICE_NAME=checkout\0"
    )
    pods = NodePods(FakeLister([FRONTEND]))
    pods.refresh()
    assert ServiceNames(SocketTable(proc=proc), proc=proc, pods=pods).name_for(4242) == "checkout"


def test_it_names_a_process_again_soon_while_its_pod_is_looked_up(tmp_path, monkeypatch):
    proc = proc_with_pod_process(tmp_path, 4242, FRONTEND_CGROUP)
    pods = NodePods(FakeLister([FRONTEND]))
    names = ServiceNames(SocketTable(proc=proc), proc=proc, pods=pods)
    assert names.name_for(4242) == f"container-{CID[:12]}"  # at once, while the LIST runs
    pods.wait(5)
    assert names.name_for(4242) == f"container-{CID[:12]}"  # cached for PENDING_NAME_TTL_S
    monkeypatch.setattr(kubernetes, "PENDING_NAME_TTL_S", 0.0)
    names._cache.clear()
    names.name_for(4242)  # cached for 0 s now
    assert names.name_for(4242) == "shop/frontend"


# --- from the environment


def test_it_stays_out_of_the_way_outside_a_cluster(tmp_path):
    assert kubernetes.from_environment({}, tmp_path) is None
    assert kubernetes.from_environment({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, tmp_path) is None  # no token


def test_it_lists_this_nodes_pods_from_the_service_host(tmp_path):
    (tmp_path / "token").write_text("t")
    environ = {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "NODE_NAME": "node-a",
    }
    pods = kubernetes.from_environment(environ, tmp_path)
    assert pods.list_pods.url == (
        "https://10.96.0.1:443/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&resourceVersion=0"
    )


def test_it_brackets_an_ipv6_service_host(tmp_path):
    (tmp_path / "token").write_text("t")
    environ = {"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "443", "NODE_NAME": "n"}
    assert kubernetes.from_environment(environ, tmp_path).list_pods.url.startswith(
        "https://[fd00:10:96::1]:443/"
    )


# --- the LIST over HTTPS, against a local stand-in for the API server

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


class ApiServer:
    """Answers GET /api/v1/pods with `pods` (or `status`), after `delay_s`; records each request."""

    def __init__(self, cert: Path, key: Path):
        self.requests, self.pods, self.status, self.delay_s = [], [], 200, 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, dict(self.headers)))
                time.sleep(server.delay_s)
                body = json.dumps({"kind": "PartialObjectMetadataList", "items": server.pods}).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # clients that gave up, on purpose
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def account(tmp_path):
    """A service-account directory as the kubelet mounts it: token and the cluster's CA."""
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    cert, _ = self_signed(tmp_path, "api")
    shutil.copy(cert, directory / "ca.crt")
    (directory / "token").write_text("first-token\n")
    return directory


@pytest.fixture
def api_server(tmp_path, account):
    server = ApiServer(tmp_path / "api.crt", tmp_path / "api.key")
    yield server
    server.close()


@needs_openssl
def test_it_lists_metadata_of_this_nodes_pods_with_the_service_account_token(
    api_server, account, monkeypatch
):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # the API server is reached directly
    api_server.pods = [FRONTEND]
    lister = PodLister(api_server.url, "node-a", account)
    assert lister() == [FRONTEND]
    (account / "token").write_text("rotated-token\n")  # the kubelet rotates projected tokens
    lister()
    (path, first), (_, second) = api_server.requests
    assert urlsplit(path).path == "/api/v1/pods"
    assert parse_qs(urlsplit(path).query) == {
        "fieldSelector": ["spec.nodeName=node-a"],
        "resourceVersion": ["0"],
    }
    assert (first["Authorization"], second["Authorization"]) == ("Bearer first-token", "Bearer rotated-token")
    assert first["Accept"].startswith("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")


@needs_openssl
def test_it_says_what_to_check_when_the_api_server_forbids_the_list(api_server, account):
    api_server.status = 403
    with pytest.raises(OSError, match=r"HTTP 403 .*agent-rbac\.yaml"):
        PodLister(api_server.url, "node-a", account)()


@needs_openssl
def test_it_refuses_an_api_server_its_ca_did_not_sign(api_server, account, tmp_path):
    other, _ = self_signed(tmp_path, "other")
    shutil.copy(other, account / "ca.crt")
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        PodLister(api_server.url, "node-a", account)()


@needs_openssl
def test_it_gives_up_on_a_hung_api_server_after_its_timeout(api_server, account):
    api_server.delay_s = 2.0
    started = time.monotonic()
    with pytest.raises(OSError):
        PodLister(api_server.url, "node-a", account, timeout_s=0.3)()
    assert time.monotonic() - started < 1.5
