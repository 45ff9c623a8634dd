#!/usr/bin/python3
"""Checks deploy/kubernetes/fastables.yaml against the rest of the project.

Usage: deploy/kubernetes/check.py FASTABLES_BINARY   (from the repository root)

The DaemonSet must run on the host network with exactly the capabilities
that the container's documented run command grants (deploy/container/
Containerfile, deploy/README.md) and, when it exists, that the systemd unit
(deploy/fastables.service) grants; mount /sys/fs/bpf from the host and the
ConfigMap where its arguments read the configuration; and probe /healthz
and /readyz on the port of the ConfigMap's `[stats] listen`. The
ConfigMap's configuration and rules must pass `fastables check`.

Prints one line per check; exits 1 at the first that fails.
Debian packages: python3-yaml.
"""

import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

MANIFEST = Path("deploy/kubernetes/fastables.yaml")


def fail(msg):
    print(f"FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def ok(msg):
    print(f"ok: {msg}")


def expect(what, got, want):
    if got != want:
        fail(f"{what}: {got!r}, expected {want!r}")
    ok(f"{what}: {got!r}")


def cap_add_lists(path):
    """The capability sets of every `--cap-add A,B` in a file."""
    return [
        frozenset(m.split(","))
        for m in re.findall(r"--cap-add ([A-Z_,]+)", path.read_text())
    ]


def unit_capabilities(path):
    """AmbientCapabilities= of a systemd unit, without the CAP_ prefix."""
    caps = set()
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AmbientCapabilities":
            caps |= {c.removeprefix("CAP_") for c in value.split()}
    return frozenset(caps)


def main():
    if len(sys.argv) != 2:
        fail("usage: check.py FASTABLES_BINARY")
    fastables = sys.argv[1]
    docs = {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}
    ds = docs.get("DaemonSet") or fail("no DaemonSet")
    cm = docs.get("ConfigMap") or fail("no ConfigMap")
    pod = ds["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]

    expect("hostNetwork", pod.get("hostNetwork"), True)
    expect("selector matches the pod's labels",
           all(ds["spec"]["template"]["metadata"]["labels"].get(k) == v
               for k, v in ds["spec"]["selector"]["matchLabels"].items()), True)

    sec = ctr["securityContext"]
    caps = frozenset(sec["capabilities"]["add"])
    expect("capabilities dropped", sec["capabilities"]["drop"], ["ALL"])
    expect("privileged", sec.get("privileged", False), False)
    for doc in [Path("deploy/container/Containerfile"), Path("deploy/README.md")]:
        lists = cap_add_lists(doc)
        if not lists:
            fail(f"{doc} has no --cap-add")
        for listed in lists:
            expect(f"capabilities added = {doc}'s --cap-add", sorted(caps), sorted(listed))
    unit = Path("deploy/fastables.service")
    if unit.exists():
        expect(f"capabilities added = {unit}'s AmbientCapabilities",
               sorted(caps), sorted(unit_capabilities(unit)))
    else:
        print(f"note: {unit} does not exist yet; capabilities not compared with it")

    mounts = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    bpffs = volumes[mounts["/sys/fs/bpf"]]
    expect("/sys/fs/bpf is the host's", bpffs["hostPath"]["path"], "/sys/fs/bpf")
    args = ctr["args"]
    config_path = Path(args[args.index("-c") + 1])
    config_volume = volumes[mounts[str(config_path.parent)]]
    expect(f"{config_path.parent} is the ConfigMap",
           config_volume["configMap"]["name"], cm["metadata"]["name"])
    if config_path.name not in cm["data"]:
        fail(f"the ConfigMap has no {config_path.name}")

    config = tomllib.loads(cm["data"][config_path.name])
    listen = config.get("stats", {}).get("listen") or fail("no [stats] listen")
    port = int(listen.rsplit(":", 1)[1])
    named = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        get = ctr[probe]["httpGet"]
        expect(f"{probe} path", get["path"], path)
        expect(f"{probe} port = [stats] listen's ({listen})",
               named.get(get["port"], get["port"]), port)
    socket = config.get("control", {}).get("socket") or fail("no [control] socket")
    if str(Path(socket).parent) not in mounts:
        fail(f"the control socket's directory {Path(socket).parent} is not mounted")
    ok(f"the control socket's directory {Path(socket).parent} is mounted")

    with tempfile.TemporaryDirectory() as d:
        for name, text in cm["data"].items():
            (Path(d) / name).write_text(text)
        r = subprocess.run([fastables, "check", "-c", str(Path(d) / config_path.name)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"fastables check of the ConfigMap: {r.stdout}{r.stderr}")
        ok(f"fastables check of the ConfigMap: {r.stdout.strip()}")


if __name__ == "__main__":
    main()
