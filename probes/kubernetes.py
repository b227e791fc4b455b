"""Kubernetes pods behind processes: a container is named `<namespace>/<workload>` (the Deployment,
StatefulSet, DaemonSet, ... that owns its pod) instead of by its container id.

The pod UID and container id come from /proc/<pid>/cgroup, whose shapes differ by runtime
(containerd, cri-o, docker) and cgroup driver (systemd, cgroupfs). The pod's namespace, name and
owner come from the API server, only when the worker runs in a cluster: KUBERNETES_SERVICE_HOST set
and a service-account token mounted (deploy/k8s/agent-rbac.yaml grants get/list/watch on pods).
Elsewhere nothing here runs and names do not change.

The worker's loop never waits for the API: a background thread LISTs this node's pods (metadata
only, `fieldSelector=spec.nodeName=<node>`), at most every REFRESH_MIN_INTERVAL_S and only when a
process's pod is not known yet (a pod UID's namespace, name and owner never change, so a known pod
needs no refresh). Until then the process keeps its container name for PENDING_NAME_TTL_S. Failed
LISTs are counted in `NodePods.errors` and logged once until one succeeds again.
"""

import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import HTTPSHandler, OpenerDirector, ProxyHandler, Request, build_opener

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REFRESH_MIN_INTERVAL_S = 30.0  # one LIST per node at most this often, whatever the misses
REQUEST_TIMEOUT_S = 5.0  # the LIST runs off the worker's loop; this bounds a hung API server
PENDING_NAME_TTL_S = 5.0  # a process whose pod is not known yet is named again this soon
MAX_RESPONSE_BYTES = 64 << 20  # metadata of a full node (110 pods) is well under 1 MiB
MAX_NAME_LENGTH = 255  # as probes.identity caps OTEL_SERVICE_NAME
# Ask for metadata only (PartialObjectMetadataList, as client-go's metadata informers do): the pod
# specs and statuses are most of a LIST's bytes and none of what names a service.
ACCEPT_METADATA = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"  # a static pod's cgroup carries this hash, not its UID

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
# The pod's cgroup: `pod<uid>` (cgroupfs driver) or `kubepods-<qos>-pod<uid with _>.slice` (systemd
# driver, also under kind's `kubelet-kubepods...`). No `kubepods` anchor: inside a private cgroup
# namespace the path is relative to the worker's own cgroup (`/../../besteffort/pod<uid>/...`).
_POD = re.compile(rf"/(?:[a-z][a-z-]*-)?pod({_UID})(?:\.slice)?(?=/|$)")
# The container's cgroup below it: a bare id (cgroupfs) or `<runtime>-<id>.scope` (systemd). cri-o's
# `crio-conmon-<id>.scope` is its monitor process, in the pod but no container.
_CONTAINER = re.compile(r"^/(?:(?:cri-containerd|crio|docker|containerd)-)?([0-9a-f]{64})(?:\.scope)?(?=/|$)")
# The CronJob controller names its Jobs `<cronjob>-<scheduled time in minutes since the epoch>`.
_CRONJOB_SUFFIX = re.compile(r"-\d{8,}$")


@dataclass(frozen=True, slots=True)
class PodCgroup:
    pod_uid: str  # as the API server spells it: dashes, not the systemd driver's underscores
    container_id: str | None


def parse_cgroup(text: str) -> PodCgroup | None:
    """The pod (and container) of a process from its /proc/<pid>/cgroup text; None outside a pod."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        pod = _POD.search(path)
        if pod is None:
            continue
        container = _CONTAINER.match(path[pod.end() :])
        return PodCgroup(pod.group(1).replace("_", "-"), container.group(1) if container else None)
    return None


def workload_name(metadata: Mapping) -> str:
    """`<namespace>/<workload>` for a pod's metadata: its controller's name, a Deployment's for a
    ReplicaSet it made (the ReplicaSet's name minus its pod-template-hash), a CronJob's for a Job it
    made, a static pod's name without its node suffix; a pod without a controller by its own name."""
    namespace = metadata.get("namespace") or "default"
    name = metadata.get("name") or metadata.get("uid") or "unknown"
    owners = metadata.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), None)
    if owner and owner.get("name"):
        kind, owner_name = owner.get("kind"), owner["name"]
        template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
        if kind == "ReplicaSet" and template_hash and owner_name.endswith(f"-{template_hash}"):
            name = owner_name[: -len(template_hash) - 1]
        elif kind == "Job":
            name = _CRONJOB_SUFFIX.sub("", owner_name)
        elif kind == "Node":  # a static pod's mirror: `<manifest name>-<node name>`
            name = name.removesuffix(f"-{owner_name}")
        else:
            name = owner_name
    return f"{namespace}/{name}"[:MAX_NAME_LENGTH]


class NodePods:
    """Service names of this node's pods by pod UID, from LISTs run in a background thread."""

    def __init__(
        self,
        list_pods: Callable[[], list[dict]],
        min_interval_s: float = REFRESH_MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.list_pods = list_pods
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.errors = 0  # failed LISTs since start
        self.refreshes = 0  # successful LISTs since start
        self._names: dict[str, str] = {}  # replaced whole by each LIST, read without a lock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_attempt: float | None = None
        self._failing = False

    def service_name(self, cgroup_text: str) -> tuple[str | None, bool]:
        """(name, settled) for a process whose /proc/<pid>/cgroup reads `cgroup_text`: the pod's
        `<namespace>/<workload>`; (None, True) outside a pod; (None, False) for a pod not known yet,
        which asks for a LIST (name the process otherwise for now, and ask again soon)."""
        pod = parse_cgroup(cgroup_text)
        if pod is None:
            return None, True
        name = self._names.get(pod.pod_uid)
        if name is None:
            self.request_refresh()
        return name, name is not None

    def request_refresh(self) -> None:
        """Start a LIST in the background, unless one runs or ran less than min_interval_s ago."""
        with self._lock:
            now = self.clock()
            running = self._thread is not None and self._thread.is_alive()
            if running or (self._last_attempt is not None and now - self._last_attempt < self.min_interval_s):
                return
            self._last_attempt = now
            self._thread = threading.Thread(target=self._refresh_logged, name="kubernetes-pods", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Until the background LIST (if any) is done."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def refresh(self) -> None:
        """LIST now, in this thread; raises what the LIST raised."""
        names = {}
        for pod in self.list_pods():
            metadata = pod.get("metadata") or {}
            name = workload_name(metadata)
            for uid in (metadata.get("uid"), (metadata.get("annotations") or {}).get(MIRROR_ANNOTATION)):
                if uid:
                    names[uid] = name
        self._names = names
        self.refreshes += 1

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # a thread's exception would be lost: count it, say it once
            self.errors += 1
            if not self._failing:
                log.warning(
                    "Kubernetes pod names unavailable, containers keep their container names: %s "
                    "(retried at most every %.0f s; logged again only after a success)",
                    exc,
                    self.min_interval_s,
                )
            self._failing = True
            return
        if self._failing:
            log.info("Kubernetes pod names available again (%d pods on this node)", len(self._names))
        self._failing = False


class PodLister:
    """LIST the pods on one node from the API server with the pod's service-account token (re-read
    on every call: the kubelet rotates projected tokens) and its cluster CA."""

    def __init__(
        self,
        api_url: str,
        node_name: str,
        account: Path = SERVICE_ACCOUNT,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ):
        query = urlencode({"fieldSelector": f"spec.nodeName={node_name}", "resourceVersion": "0"})
        # resourceVersion=0: served from the API server's watch cache, not a quorum read of etcd.
        self.url = f"{api_url.rstrip('/')}/api/v1/pods?{query}"
        self.account = account
        self.timeout_s = timeout_s
        self._opener: OpenerDirector | None = None

    def __call__(self) -> list[dict]:
        if self._opener is None:
            context = ssl.create_default_context(cafile=str(self.account / "ca.crt"))
            # The API server is reached directly: an HTTPS_PROXY meant for the outside must not apply.
            self._opener = build_opener(ProxyHandler({}), HTTPSHandler(context=context))
        token = (self.account / "token").read_text().strip()
        request = Request(self.url, headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT_METADATA})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                body = response.read(MAX_RESPONSE_BYTES + 1)
        except HTTPError as exc:
            hint = " (may the worker's service account list pods? see deploy/k8s/agent-rbac.yaml)"
            hint = hint if exc.code in (401, 403) else ""
            raise OSError(f"GET {self.url}: HTTP {exc.code}{hint}") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise OSError(f"GET {self.url}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        return json.loads(body).get("items") or []


def in_cluster(environ: Mapping[str, str] = os.environ, account: Path = SERVICE_ACCOUNT) -> bool:
    return bool(environ.get("KUBERNETES_SERVICE_HOST")) and (account / "token").is_file()


def from_environment(
    environ: Mapping[str, str] = os.environ, account: Path = SERVICE_ACCOUNT
) -> NodePods | None:
    """This node's pods when the worker runs in a cluster, else None. The node is NODE_NAME (the
    downward API's spec.nodeName, set in deploy/k8s/agent-daemonset.yaml), else the host name."""
    if not in_cluster(environ, account):
        return None
    host = environ["KUBERNETES_SERVICE_HOST"]
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    api_url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    node = environ.get("NODE_NAME") or environ.get("OBSWEB_HOST_NAME") or socket.gethostname()
    log.info("naming pods by namespace/workload from %s (node %s)", api_url, node)
    return NodePods(PodLister(api_url, node, account))


FROM_ENVIRONMENT = object()  # probes.identity.ServiceNames: use node_pods()
_shared: NodePods | None = None
_shared_made = False
_shared_lock = threading.Lock()


def node_pods() -> NodePods | None:
    """The process's one NodePods (from_environment), made on first use."""
    global _shared, _shared_made
    with _shared_lock:
        if not _shared_made:
            _shared, _shared_made = from_environment(), True
        return _shared
