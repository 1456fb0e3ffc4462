"""A real two-node Ray cluster on one machine: a head node plus a worker node in its own network namespace.

The worker node is a separate host as far as Ray can tell: its own network stack (``ip netns`` + a veth
pair, addresses in a private /30 made here, traffic only between the two ends), its own raylet,
object store and worker processes. Ray 2.60 refuses a second node unless token authentication is on
for the head, every node and every client, so one random token is shared through the environment.
Needs root (``ip netns``); CI runs as root. Every process started here is found again by its session
folder (unique per cluster) and ended by pid, never by name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


class ClusterError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def can_make_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


class RayCluster:
    """``with RayCluster() as cluster:`` -> ``cluster.address``, ``cluster.env`` for drivers."""

    def __init__(self, cpus_per_node: int = 1) -> None:
        tag = f"{os.getpid() % 100000}{secrets.randbelow(100)}"
        self.namespace = f"faray{tag}"
        self.host_link, self.node_link = f"fah{tag}"[:15], f"fan{tag}"[:15]
        subnet = 16 + secrets.randbelow(200)
        self.head_ip, self.node_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
        self.port = _free_port()
        self.cpus = cpus_per_node
        # short paths: Ray's unix sockets live under the temp dir (108-byte limit)
        self.head_dir = Path(tempfile.mkdtemp(prefix="fa-rh-", dir="/tmp"))
        self.node_dir = Path(tempfile.mkdtemp(prefix="fa-rn-", dir="/tmp"))
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": str(ROOT / "src"),
        }

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.port}"

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def start(self) -> RayCluster:
        self._ip("netns", "add", self.namespace)
        self._ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.node_link)
        self._ip("link", "set", self.node_link, "netns", self.namespace)
        self._ip("addr", "add", f"{self.head_ip}/30", "dev", self.host_link)
        self._ip("link", "set", self.host_link, "up")
        inside = ("netns", "exec", self.namespace, "ip")
        self._ip(*inside, "addr", "add", f"{self.node_ip}/30", "dev", self.node_link)
        self._ip(*inside, "link", "set", self.node_link, "up")
        self._ip(*inside, "link", "set", "lo", "up")
        # a driver on this host registers under the host's own address (Ray picks it, whatever it is
        # told): route just those addresses back through the veth, which ends in this host
        for address in self._host_addresses():
            self._ip(*inside, "route", "add", f"{address}/32", "via", self.head_ip)
        common = ["--num-cpus", str(self.cpus), "--disable-usage-stats"]
        self._run(
            [
                RAY,
                "start",
                "--head",
                "--node-ip-address",
                self.head_ip,
                "--port",
                str(self.port),
                "--include-dashboard=false",
                "--temp-dir",
                str(self.head_dir),
                *common,
            ]
        )
        self._run(
            [
                "ip",
                "netns",
                "exec",
                self.namespace,
                RAY,
                "start",
                "--address",
                self.address,
                "--node-ip-address",
                self.node_ip,
                "--temp-dir",
                str(self.node_dir),
                *common,
            ]
        )
        self.wait_for_nodes(2)
        return self

    def _host_addresses(self) -> list[str]:
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=True
        ).stdout
        return [
            line.split()[3].split("/")[0] for line in out.splitlines() if line.split()[1] != self.host_link
        ]

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise ClusterError(
                f"{' '.join(command[:4])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )

    def wait_for_nodes(self, count: int, timeout: float = 120.0) -> None:
        probe = (
            "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))"
        )
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(
                [sys.executable, "-c", probe, self.address], env=self.env, capture_output=True, text=True
            )
            if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the cluster never had {count} nodes: {done.stdout} {done.stderr[-1500:]}"
                )
            time.sleep(1)

    def processes(self, node: str = "both") -> list[int]:
        """Every process of this cluster: the ones whose command line names its session folders, and
        all their descendants (Ray renames worker processes, so they are found through their raylet)."""
        folders = {"head": [self.head_dir], "node": [self.node_dir], "both": [self.head_dir, self.node_dir]}[
            node
        ]
        roots = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and any(str(f) in _cmdline(int(p.name)) for f in folders)
        ]
        seen: list[int] = []
        todo = list(roots)
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.append(pid)
            todo += _children(pid)
        return seen

    def workers(self, node: str, name: str) -> list[int]:
        """Worker processes of ``node`` whose (Ray-set) title contains ``name``."""
        return [pid for pid in self.processes(node) if name in _cmdline(pid)]

    def stop(self) -> None:
        for _ in range(3):
            pids = self.processes()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
        shutil.rmtree(self.head_dir, ignore_errors=True)
        shutil.rmtree(self.node_dir, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
