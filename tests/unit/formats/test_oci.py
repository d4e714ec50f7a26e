"""formats/oci.py and oci_spec.py: config.json validation, name tables, signals, container ids, spec and features."""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import inclavare
from inclavare.errors import ConfigError
from inclavare.formats import oci, oci_spec
from inclavare.formats.signals import parse_signal
from inclavare.runtime.launch import load_config


def good_spec() -> dict[str, Any]:
    spec = oci_spec.default_spec()
    spec["process"]["terminal"] = False
    return spec


def write_bundle(tmp_path: Path, spec: Any, rootfs: bool = True) -> str:
    if rootfs:
        (tmp_path / "rootfs").mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(spec))
    return str(tmp_path)


def error_for(
    tmp_path: Path, edit: Callable[[dict[str, Any]], object], need_process: bool = True
) -> ConfigError:
    spec = good_spec()
    edit(spec)
    with pytest.raises(ConfigError) as info:
        load_config(write_bundle(tmp_path, spec), need_process=need_process)
    return info.value


def expect(tmp_path: Path, edit: Callable[[dict[str, Any]], object], field: str, problem: str) -> None:
    err = error_for(tmp_path, edit)
    assert err.field == field, str(err)
    assert problem in err.problem, str(err)
    assert "\n" not in str(err)


def ok(tmp_path: Path, edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    spec = good_spec()
    edit(spec)
    return load_config(write_bundle(tmp_path, spec))


def ns(spec: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = spec["linux"]["namespaces"]
    return result


def drop_ns(spec: dict[str, Any], kind: str) -> None:
    spec["linux"]["namespaces"] = [n for n in ns(spec) if n["type"] != kind]


# ---- good configs and file-level errors --------------------------------------------------------------


def test_default_spec_loads_unchanged(tmp_path: Path) -> None:
    spec = good_spec()
    assert load_config(write_bundle(tmp_path, spec)) == spec


def test_rootless_spec_loads(tmp_path: Path) -> None:
    spec = oci_spec.default_spec(rootless=True)
    assert load_config(write_bundle(tmp_path, spec)) == spec


def test_a_rich_valid_config_loads(tmp_path: Path) -> None:
    def edit(s: dict[str, Any]) -> None:
        s["ociVersion"] = "1.0.2-dev"
        s["domainname"] = "example.org"
        s["process"]["consoleSize"] = {"height": 24, "width": 80}
        s["process"]["user"] = {"uid": 1000, "gid": 1000, "umask": 0o22, "additionalGids": [5, 6]}
        s["process"]["capabilities"]["inheritable"] = ["CAP_CHECKPOINT_RESTORE"]
        s["process"]["rlimits"].append({"type": "RLIMIT_CORE", "soft": 0, "hard": 2**64 - 1})
        s["process"]["oomScoreAdj"] = -1000
        s["process"]["apparmorProfile"] = ""
        s["hooks"] = {
            k: [{"path": "/bin/true", "args": ["true"], "env": ["A=1"], "timeout": 5}] for k in oci.HOOK_NAMES
        }
        s["annotations"] = {"org.example.key": "value"}
        s["mounts"].append(
            {
                "destination": "/data",
                "type": "none",
                "source": "/srv",
                "options": ["rbind", "ro"],
                "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            }
        )
        ns(s).extend([{"type": "cgroup"}, {"type": "time"}, {"type": "user"}])
        s["linux"]["uidMappings"] = [
            {"containerID": 0, "hostID": 100000, "size": 1000},
            {"containerID": 1000, "hostID": 1000, "size": 1},
        ]
        s["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        s["linux"]["timeOffsets"] = {"monotonic": {"secs": -5, "nanosecs": 10}, "boottime": {"secs": 86400}}
        s["linux"]["devices"] = [
            {
                "path": "/dev/fuse",
                "type": "c",
                "major": 10,
                "minor": 229,
                "fileMode": 0o666,
                "uid": 0,
                "gid": 0,
            },
            {"path": "/dev/fifo", "type": "p"},
        ]
        s["linux"]["sysctl"] = {
            "net.ipv4.ip_forward": "1",
            "net/ipv4/conf/eth0.100/rp_filter": "0",
            "kernel.shmmax": "1000",
            "fs.mqueue.msg_max": "10",
            "kernel.domainname": "x",
            "user.max_user_namespaces": "0",
        }
        s["linux"]["rootfsPropagation"] = "rslave"
        s["linux"]["mountLabel"] = ""
        s["linux"]["personality"] = {"domain": "LINUX32"}
        s["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW"}
        s["linux"]["cgroupsPath"] = "/rune/x"

    ok(tmp_path, edit)


def test_json_null_means_absent(tmp_path: Path) -> None:
    def edit(s: dict[str, Any]) -> None:
        s["hooks"] = None
        s["process"]["rlimits"] = None
        s["linux"]["resources"] = None
        s["linux"]["namespaces"][0]["path"] = None

    ok(tmp_path, edit)


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert str(info.value) == f"config.json: not found in bundle {tmp_path}"


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{\n  "ociVersion": "1.0.0",\n    "root" {}\n}')
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert str(info.value).startswith("config.json: invalid JSON at line 3 column 12: ")


def test_not_utf8_and_not_object(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="config.json: must be a JSON object"):
        load_config(str(tmp_path))


# ---- ociVersion and root ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0.0", "1.0.2-dev", "1.1.0", "1.2.1", "1.1.0-rc.3", "1.2.0+dev"])
def test_supported_versions(tmp_path: Path, version: str) -> None:
    ok(tmp_path, lambda s: s.update(ociVersion=version))


def test_unsupported_versions(tmp_path: Path) -> None:
    err = error_for(tmp_path, lambda s: s.update(ociVersion="2.0.0"))
    assert str(err) == 'ociVersion: unsupported version "2.0.0" (supported 1.0.0 to 1.2.x)'
    expect(tmp_path, lambda s: s.update(ociVersion="1.3.0"), "ociVersion", "unsupported version")
    expect(tmp_path, lambda s: s.update(ociVersion="0.9.0"), "ociVersion", "unsupported version")
    expect(tmp_path, lambda s: s.update(ociVersion="1.0"), "ociVersion", "not a SemVer")
    expect(tmp_path, lambda s: s.pop("ociVersion"), "ociVersion", "required")
    expect(tmp_path, lambda s: s.update(ociVersion=1), "ociVersion", "must be a string")


def test_root(tmp_path: Path) -> None:
    err = error_for(tmp_path, lambda s: s["root"].update(path="nothere"))
    assert str(err) == f"root.path: {tmp_path}/nothere does not exist"
    expect(tmp_path, lambda s: s.pop("root"), "root", "required")
    expect(tmp_path, lambda s: s["root"].update(readonly="yes"), "root.readonly", "must be a boolean")
    (tmp_path / "file").write_text("")
    expect(tmp_path, lambda s: s["root"].update(path="file"), "root.path", "is not a directory")
    # An absolute root.path is used as is.
    other = tmp_path / "abs"
    other.mkdir()
    ok(tmp_path, lambda s: s["root"].update(path=str(other)))


# ---- process -------------------------------------------------------------------------------------------


def test_process_required_unless_caller_allows(tmp_path: Path) -> None:
    expect(tmp_path, lambda s: s.pop("process"), "process", "required")
    spec = good_spec()
    del spec["process"]
    assert "process" not in load_config(write_bundle(tmp_path, spec), need_process=False)


def test_process_args(tmp_path: Path) -> None:
    msg = "must be a non-empty array of strings"
    expect(tmp_path, lambda s: s["process"].update(args=[]), "process.args", msg)
    expect(tmp_path, lambda s: s["process"].pop("args"), "process.args", msg)
    expect(tmp_path, lambda s: s["process"].update(args=["sh", 1]), "process.args", msg)
    expect(tmp_path, lambda s: s["process"].update(args="sh"), "process.args", msg)
    expect(tmp_path, lambda s: s["process"].update(args=["sh", "a\x00b"]), "process.args[1]", "NUL")


def test_process_env_cwd_terminal(tmp_path: Path) -> None:
    expect(tmp_path, lambda s: s["process"]["env"].append("NOVALUE"), "process.env[2]", '"NAME=VALUE"')
    expect(tmp_path, lambda s: s["process"]["env"].append("=x"), "process.env[2]", "name must not be empty")
    expect(tmp_path, lambda s: s["process"]["env"].append(3), "process.env[2]", "must be a string")
    expect(tmp_path, lambda s: s["process"].update(cwd="tmp"), "process.cwd", "must be an absolute path")
    expect(tmp_path, lambda s: s["process"].pop("cwd"), "process.cwd", "required")
    expect(tmp_path, lambda s: s["process"].update(terminal=1), "process.terminal", "must be a boolean")
    expect(
        tmp_path,
        lambda s: s["process"].update(consoleSize={"height": 10}),
        "process.consoleSize.width",
        "required",
    )
    expect(
        tmp_path,
        lambda s: s["process"].update(consoleSize={"height": -1, "width": 1}),
        "process.consoleSize.height",
        "between 0 and 65535",
    )


def test_process_user(tmp_path: Path) -> None:
    expect(
        tmp_path,
        lambda s: s["process"]["user"].update(uid=-1),
        "process.user.uid",
        "between 0 and 4294967295",
    )
    expect(
        tmp_path, lambda s: s["process"]["user"].update(gid=True), "process.user.gid", "must be an integer"
    )
    expect(tmp_path, lambda s: s["process"]["user"].update(gid=1.0), "process.user.gid", "must be an integer")
    expect(tmp_path, lambda s: s["process"]["user"].pop("uid"), "process.user.uid", "required")
    expect(
        tmp_path, lambda s: s["process"]["user"].update(umask=0o1000), "process.user.umask", "between 0 and"
    )
    expect(
        tmp_path,
        lambda s: s["process"]["user"].update(additionalGids=[1, "2"]),
        "process.user.additionalGids[1]",
        "must be an integer",
    )


def test_capabilities(tmp_path: Path) -> None:
    err = error_for(tmp_path, lambda s: s["process"]["capabilities"]["bounding"].insert(1, "CAP_FOO"))
    assert str(err) == 'process.capabilities.bounding[1]: unknown capability "CAP_FOO"'
    expect(
        tmp_path,
        lambda s: s["process"]["capabilities"].update(ambient=["kill"]),
        "process.capabilities.ambient[0]",
        "unknown capability",
    )
    expect(
        tmp_path,
        lambda s: s["process"]["capabilities"].update(effective="CAP_KILL"),
        "process.capabilities.effective",
        "must be an array",
    )


def test_capability_table() -> None:
    assert len(oci.CAPABILITIES) == 41
    assert oci.capability_number("CAP_CHOWN") == 0
    assert oci.capability_number("CAP_SYS_ADMIN") == 21
    assert oci.capability_number("CAP_AUDIT_READ") == 37
    assert oci.capability_number("CAP_CHECKPOINT_RESTORE") == 40
    assert sorted(oci.CAPABILITIES.values()) == list(range(41))
    with pytest.raises(ConfigError, match='unknown capability "CAP_NOPE"'):
        oci.capability_number("CAP_NOPE")


def test_rlimits(tmp_path: Path) -> None:
    err = error_for(tmp_path, lambda s: s["process"]["rlimits"][0].update(type="RLIMIT_X"))
    assert str(err) == 'process.rlimits[0].type: unknown rlimit "RLIMIT_X"'
    expect(
        tmp_path,
        lambda s: s["process"]["rlimits"].append({"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}),
        "process.rlimits[1].type",
        'duplicate rlimit "RLIMIT_NOFILE"',
    )
    expect(
        tmp_path,
        lambda s: s["process"]["rlimits"][0].update(soft=2048),
        "process.rlimits[0].soft",
        "must not exceed hard (2048 > 1024)",
    )
    expect(tmp_path, lambda s: s["process"]["rlimits"][0].pop("hard"), "process.rlimits[0].hard", "required")
    expect(
        tmp_path,
        lambda s: s["process"]["rlimits"][0].update(hard=2**64),
        "process.rlimits[0].hard",
        "between",
    )


def test_rlimit_numbers_match_the_platform() -> None:
    for name, number in oci.RLIMITS.items():
        if hasattr(resource, name):
            assert getattr(resource, name) == number, name


def test_process_misc(tmp_path: Path) -> None:
    err = error_for(tmp_path, lambda s: s["process"].update(oomScoreAdj=1001))
    assert str(err) == "process.oomScoreAdj: must be between -1000 and 1000"
    expect(tmp_path, lambda s: s["process"].update(noNewPrivileges="1"), "process.noNewPrivileges", "boolean")
    expect(
        tmp_path, lambda s: s["process"].update(apparmorProfile="p"), "process.apparmorProfile", "AppArmor"
    )
    expect(tmp_path, lambda s: s["process"].update(selinuxLabel="l"), "process.selinuxLabel", "SELinux")
    expect(
        tmp_path, lambda s: s["process"].update(selinuxLabel=5), "process.selinuxLabel", "must be a string"
    )
    expect(
        tmp_path,
        lambda s: s["process"].update(scheduler={"policy": "SCHED_OTHER", "priority": 5}),
        "process.scheduler.priority",
        "SCHED_FIFO",
    )
    expect(
        tmp_path,
        lambda s: s["process"].update(ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 8}),
        "process.ioPriority.priority",
        "between 0 and 7",
    )


# ---- hostname, mounts, hooks, annotations ---------------------------------------------------------


def test_hostname_needs_uts_namespace(tmp_path: Path) -> None:
    err = error_for(tmp_path, lambda s: drop_ns(s, "uts"))
    assert str(err) == "hostname: requires a UTS namespace"

    def domain_only(s: dict[str, Any]) -> None:
        drop_ns(s, "uts")
        s["hostname"] = ""
        s["domainname"] = "d"

    expect(tmp_path, domain_only, "domainname", "requires a UTS namespace")

    def no_uts_no_hostname(s: dict[str, Any]) -> None:
        drop_ns(s, "uts")
        del s["hostname"]

    ok(tmp_path, no_uts_no_hostname)
    expect(tmp_path, lambda s: s.update(hostname=["x"]), "hostname", "must be a string")


def test_mounts(tmp_path: Path) -> None:
    err = error_for(tmp_path, lambda s: s["mounts"][2].update(destination="dev/pts"))
    assert str(err) == "mounts[2].destination: must be an absolute path"
    expect(tmp_path, lambda s: s["mounts"][0].pop("destination"), "mounts[0].destination", "required")
    expect(
        tmp_path, lambda s: s["mounts"][1]["options"].append(7), "mounts[1].options[4]", "must be a string"
    )
    expect(tmp_path, lambda s: s["mounts"][0].update(source=1), "mounts[0].source", "must be a string")
    expect(tmp_path, lambda s: s["mounts"][0].update(type=None, source="x\x00"), "mounts[0].source", "NUL")
    expect(tmp_path, lambda s: s.update(mounts={}), "mounts", "must be an array")


def test_idmapped_mounts(tmp_path: Path) -> None:
    maps = [{"containerID": 0, "hostID": 1000, "size": 10}]
    bind: dict[str, Any] = {"destination": "/m", "source": "/srv", "type": "none", "options": ["bind"]}
    expect(
        tmp_path,
        lambda s: s["mounts"].append({**bind, "uidMappings": maps}),
        "mounts[7]",
        "need both uidMappings and gidMappings",
    )
    expect(
        tmp_path,
        lambda s: s["mounts"].append({**bind, "options": [], "uidMappings": maps, "gidMappings": maps}),
        "mounts[7]",
        "must be bind mounts",
    )
    expect(
        tmp_path,
        lambda s: s["mounts"].append({**bind, "uidMappings": [{**maps[0], "size": 0}], "gidMappings": maps}),
        "mounts[7].uidMappings[0].size",
        "must be > 0",
    )


def test_hooks(tmp_path: Path) -> None:
    hook = {"path": "/usr/bin/hook"}
    err = error_for(tmp_path, lambda s: s.update(hooks={"prestart": [{"path": "hook"}]}))
    assert str(err) == "hooks.prestart[0].path: must be an absolute path"
    err = error_for(tmp_path, lambda s: s.update(hooks={"poststart": [{**hook, "timeout": 0}]}))
    assert str(err) == "hooks.poststart[0].timeout: must be > 0"
    for kind in oci.HOOK_NAMES:
        hooks: dict[str, Any] = {kind: [hook, {}]}
        expect(tmp_path, lambda s: s.update(hooks=hooks), f"hooks.{kind}[1].path", "required")  # noqa: B023 (called at once)
    expect(
        tmp_path,
        lambda s: s.update(hooks={"poststop": [{**hook, "timeout": True}]}),
        "hooks.poststop[0].timeout",
        "integer",
    )
    expect(
        tmp_path,
        lambda s: s.update(hooks={"createRuntime": [{**hook, "args": ["a", None]}]}),
        "hooks.createRuntime[0].args[1]",
        "must be a string",
    )
    expect(
        tmp_path,
        lambda s: s.update(hooks={"startContainer": [{**hook, "env": ["X"]}]}),
        "hooks.startContainer[0].env[0]",
        "NAME=VALUE",
    )
    expect(tmp_path, lambda s: s.update(hooks={"prestart": {}}), "hooks.prestart", "must be an array")
    # Unknown hook kinds are ignored, like every unknown property.
    ok(tmp_path, lambda s: s.update(hooks={"someday": 5}))


def test_annotations(tmp_path: Path) -> None:
    expect(tmp_path, lambda s: s.update(annotations={"a": 1}), 'annotations["a"]', "must be a string")
    expect(tmp_path, lambda s: s.update(annotations={"": "x"}), "annotations", "keys must not be empty")
    expect(tmp_path, lambda s: s.update(annotations=["a"]), "annotations", "must be an object")


# ---- linux ---------------------------------------------------------------------------------------------


def test_namespaces(tmp_path: Path) -> None:
    err = error_for(tmp_path, lambda s: ns(s).insert(3, {"type": "pid"}))
    assert str(err) == 'linux.namespaces[3].type: duplicate namespace "pid"'
    expect(
        tmp_path,
        lambda s: ns(s).append({"type": "foo"}),
        "linux.namespaces[5].type",
        'unknown namespace "foo"',
    )
    expect(
        tmp_path,
        lambda s: ns(s).append({"type": "cgroup", "path": "proc/1/ns/cgroup"}),
        "linux.namespaces[5].path",
        "must be an absolute path",
    )
    expect(tmp_path, lambda s: ns(s).append({}), "linux.namespaces[5].type", "required")
    ok(tmp_path, lambda s: ns(s).extend([{"type": "cgroup", "path": "/proc/1/ns/cgroup"}, {"type": "time"}]))


def test_id_mappings(tmp_path: Path) -> None:
    one = {"containerID": 0, "hostID": 1000, "size": 1}
    err = error_for(tmp_path, lambda s: s["linux"].update(uidMappings=[one]))
    assert str(err) == "linux.uidMappings: requires a user namespace"

    def with_user(**maps: Any) -> Callable[[dict[str, Any]], None]:
        def edit(s: dict[str, Any]) -> None:
            ns(s).append({"type": "user"})
            s["linux"].update(uidMappings=[one], gidMappings=[one])
            s["linux"].update(maps)

        return edit

    err = error_for(tmp_path, with_user(uidMappings=[{**one, "size": 0}]))
    assert str(err) == "linux.uidMappings[0].size: must be > 0"
    expect(
        tmp_path,
        with_user(gidMappings=[one, {"containerID": 0, "hostID": 5000, "size": 1}]),
        "linux.gidMappings[1]",
        "container id range overlaps linux.gidMappings[0]",
    )
    expect(
        tmp_path,
        with_user(gidMappings=[{**one, "size": 10}, {"containerID": 10, "hostID": 1005, "size": 1}]),
        "linux.gidMappings[1]",
        "host id range overlaps linux.gidMappings[0]",
    )
    expect(
        tmp_path,
        with_user(uidMappings=[{"containerID": 2**32 - 1, "hostID": 0, "size": 2}]),
        "linux.uidMappings[0].size",
        "exceeds",
    )
    expect(
        tmp_path,
        with_user(uidMappings=[{"hostID": 0, "size": 2}]),
        "linux.uidMappings[0].containerID",
        "required",
    )
    ok(tmp_path, with_user(uidMappings=[one, {"containerID": 1, "hostID": 100000, "size": 65535}]))

    def no_maps(s: dict[str, Any]) -> None:
        ns(s).append({"type": "user"})

    expect(tmp_path, no_maps, "linux.uidMappings", "required when a new user namespace is created")
    ok(tmp_path, lambda s: ns(s).append({"type": "user", "path": "/proc/1/ns/user"}))


def test_devices(tmp_path: Path) -> None:
    dev = {"path": "/dev/x", "type": "c", "major": 1, "minor": 3}
    err = error_for(tmp_path, lambda s: s["linux"].update(devices=[{**dev, "type": "x"}]))
    assert str(err) == "linux.devices[0].type: must be one of c, b, u, p"
    expect(
        tmp_path,
        lambda s: s["linux"].update(devices=[{**dev, "path": "x"}]),
        "linux.devices[0].path",
        "absolute",
    )
    expect(
        tmp_path,
        lambda s: s["linux"].update(devices=[{"path": "/dev/b", "type": "b", "minor": 0}]),
        "linux.devices[0].major",
        "required for device type b",
    )
    expect(
        tmp_path,
        lambda s: s["linux"].update(devices=[{**dev, "fileMode": 0o10000}]),
        "linux.devices[0].fileMode",
        "between",
    )
    expect(
        tmp_path, lambda s: s["linux"].update(devices=[{**dev, "uid": -1}]), "linux.devices[0].uid", "between"
    )


def test_sysctl_namespace_rules(tmp_path: Path) -> None:
    def with_sysctl(key: str, drop: str = "") -> Callable[[dict[str, Any]], None]:
        def edit(s: dict[str, Any]) -> None:
            if drop:
                drop_ns(s, drop)
            if drop == "uts":
                del s["hostname"]
            s["linux"]["sysctl"] = {key: "1"}

        return edit

    err = error_for(tmp_path, with_sysctl("net.x", drop="network"))
    assert str(err) == 'linux.sysctl: "net.x" requires a network namespace'
    expect(tmp_path, with_sysctl("net/ipv4/ip_forward", drop="network"), "linux.sysctl", "network namespace")
    expect(tmp_path, with_sysctl("kernel.shmmax", drop="ipc"), "linux.sysctl", "requires an IPC namespace")
    expect(
        tmp_path, with_sysctl("fs.mqueue.queues_max", drop="ipc"), "linux.sysctl", "requires an IPC namespace"
    )
    expect(tmp_path, with_sysctl("kernel.hostname"), "linux.sysctl", "conflicts with the hostname field")
    expect(tmp_path, with_sysctl("kernel.domainname", drop="uts"), "linux.sysctl", "not in a separate kernel")
    expect(
        tmp_path, with_sysctl("vm.swappiness"), "linux.sysctl", '"vm.swappiness" is not in a separate kernel'
    )
    expect(tmp_path, with_sysctl("user.max_user_namespaces"), "linux.sysctl", "requires a user namespace")
    expect(
        tmp_path,
        lambda s: s["linux"].update(sysctl={"net.x": 1}),
        'linux.sysctl["net.x"]',
        "must be a string",
    )
    ok(tmp_path, with_sysctl("net.ipv4.ip_forward"))


def test_paths_propagation_label_personality(tmp_path: Path) -> None:
    expect(
        tmp_path,
        lambda s: s["linux"]["maskedPaths"].append("proc/kmsg"),
        "linux.maskedPaths[10]",
        "must be an absolute path",
    )
    expect(
        tmp_path,
        lambda s: s["linux"]["readonlyPaths"].insert(0, 1),
        "linux.readonlyPaths[0]",
        "must be a string",
    )
    expect(tmp_path, lambda s: drop_ns(s, "mount"), "linux.maskedPaths", "requires a mount namespace")
    for value in (
        "shared",
        "slave",
        "private",
        "unbindable",
        "rshared",
        "rslave",
        "rprivate",
        "runbindable",
        "",
    ):
        ok(tmp_path, lambda s: s["linux"].update(rootfsPropagation=value))  # noqa: B023 (called at once)
    expect(
        tmp_path,
        lambda s: s["linux"].update(rootfsPropagation="recursive"),
        "linux.rootfsPropagation",
        "must be one of shared, slave",
    )
    expect(tmp_path, lambda s: s["linux"].update(mountLabel=0), "linux.mountLabel", "must be a string")
    expect(
        tmp_path,
        lambda s: s["linux"].update(personality={"domain": "BSD"}),
        "linux.personality.domain",
        "LINUX or LINUX32",
    )
    expect(
        tmp_path,
        lambda s: s["linux"].update(personality={"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]}),
        "linux.personality.flags[0]",
        "unsupported flag",
    )


def test_time_offsets(tmp_path: Path) -> None:
    offsets = {"monotonic": {"secs": 1}}
    expect(
        tmp_path,
        lambda s: s["linux"].update(timeOffsets=offsets),
        "linux.timeOffsets",
        "requires a time namespace",
    )

    def with_time(value: Any, path: str = "") -> Callable[[dict[str, Any]], None]:
        def edit(s: dict[str, Any]) -> None:
            ns(s).append({"type": "time", "path": path} if path else {"type": "time"})
            s["linux"]["timeOffsets"] = value

        return edit

    ok(tmp_path, with_time(offsets))
    expect(tmp_path, with_time({"realtime": {}}), "linux.timeOffsets.realtime", 'unknown clock "realtime"')
    expect(
        tmp_path,
        with_time({"boottime": {"nanosecs": 10**9}}),
        "linux.timeOffsets.boottime.nanosecs",
        "between 0 and 999999999",
    )
    expect(tmp_path, with_time(offsets, "/proc/1/ns/time"), "linux.timeOffsets", "cannot be combined")


def test_seccomp_and_resources_only_need_to_be_objects(tmp_path: Path) -> None:
    expect(tmp_path, lambda s: s["linux"].update(seccomp=[]), "linux.seccomp", "must be an object")
    expect(tmp_path, lambda s: s["linux"].update(resources="x"), "linux.resources", "must be an object")
    expect(tmp_path, lambda s: s.update(linux=[]), "linux", "must be an object")
    ok(tmp_path, lambda s: s["linux"].update(seccomp={"anything": ["goes", 1]}))


def test_validate_config_does_not_modify_input(tmp_path: Path) -> None:
    spec = good_spec()
    before = copy.deepcopy(spec)
    (tmp_path / "rootfs").mkdir()
    oci.validate_config(spec, str(tmp_path))
    assert spec == before


# ---- signals and container ids -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("9", 9),
        ("0", 0),
        ("KILL", signal.SIGKILL),
        ("SIGKILL", signal.SIGKILL),
        ("kill", signal.SIGKILL),
        ("sigterm", signal.SIGTERM),
        ("HUP", signal.SIGHUP),
        ("IOT", signal.SIGABRT),
        ("SIGRTMIN", signal.SIGRTMIN),
        ("SIGRTMIN+3", signal.SIGRTMIN + 3),
        ("RTMAX-1", signal.SIGRTMAX - 1),
        ("rtmax", signal.SIGRTMAX),
        (str(int(signal.SIGRTMAX)), signal.SIGRTMAX),
    ],
)
def test_parse_signal(text: str, number: int) -> None:
    assert parse_signal(text) == int(number)


@pytest.mark.parametrize(
    "text", ["FOO", "", "-9", "65", "SIGRTMIN-1", "RTMAX+1", "RTMIN+99", "SIG", "9x", "SIG_DFL"]
)
def test_parse_signal_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_signal(text)
    assert info.value.field == "signal"
    assert str(info.value).startswith(f"signal: unknown signal {json.dumps(text)}")


@pytest.mark.parametrize("cid", ["a", "abc-123", "A_b.c+d", "x,y", "...", "a..b", "0"])
def test_container_ids_accepted(cid: str) -> None:
    oci.validate_container_id(cid)


@pytest.mark.parametrize("cid", ["a/b", ".", "..", "a b", "é", "a\nb", "a:b", "a*"])
def test_container_ids_rejected(cid: str) -> None:
    with pytest.raises(ConfigError) as info:
        oci.validate_container_id(cid)
    assert str(info.value) == f"container id {json.dumps(cid)}: must match [A-Za-z0-9_+,.-]+"


def test_empty_container_id() -> None:
    with pytest.raises(ConfigError, match="container id: must not be empty"):
        oci.validate_container_id("")


def test_a_container_id_fits_one_file_name() -> None:
    oci.validate_container_id("a" * 255)
    with pytest.raises(ConfigError) as info:
        oci.validate_container_id("a" * 1000)
    assert str(info.value) == f'container id "{"a" * 32}"... (1000 characters): longer than 255 characters'


@pytest.mark.parametrize(("literal", "where"), [("NaN", "linux.resources.cpu.shares"), ("Infinity", "xfield"),
                                                ("-Infinity", "process.args[1]"), ("1e999", "annotations.n")])
def test_non_json_numbers_are_refused_naming_the_field(tmp_path: Path, literal: str, where: str) -> None:
    doc = {"ociVersion": "1.0.2", "process": {"args": ["sh", 0]}, "linux": {"resources": {"cpu": {"shares": 0}}},
           "xfield": 0, "annotations": {"n": 0}}
    text = json.dumps(doc)
    path = where.replace("[1]", "").split(".")
    target: Any = doc
    for k in path[:-1]:
        target = target[k]
    if where.endswith("[1]"):
        target[path[-1]][1] = "@@"
    else:
        target[path[-1]] = "@@"
    text = json.dumps(doc).replace('"@@"', literal)
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert str(info.value) == f"config.json: {where}: {literal} is not a JSON number (RFC 8259)"


# ---- spec and features ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rootless", [False, True])
def test_default_spec_matches_runc_spec(tmp_path: Path, rootless: bool) -> None:
    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("runc is not installed")
    cmd = [runc, "spec"] + (["--rootless"] if rootless else [])
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    theirs = json.loads((tmp_path / "config.json").read_text())
    ours = oci_spec.default_spec(rootless, os.geteuid(), os.getegid())
    assert ours["ociVersion"] == inclavare.OCI_VERSION
    theirs["ociVersion"] = ours["ociVersion"]
    assert ours == theirs


def test_default_spec_returns_fresh_objects() -> None:
    a = oci_spec.default_spec()
    a["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    a["mounts"].clear()
    b = oci_spec.default_spec()
    assert "CAP_SYS_ADMIN" not in b["process"]["capabilities"]["bounding"]
    assert len(b["mounts"]) == 7
    assert b["process"]["capabilities"]["bounding"] is not b["process"]["capabilities"]["effective"]


def test_rootless_spec_differences() -> None:
    spec = oci_spec.default_spec(rootless=True, host_uid=1234, host_gid=5678)
    kinds = [n["type"] for n in spec["linux"]["namespaces"]]
    assert "network" not in kinds and "user" in kinds
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1234, "size": 1}]
    assert spec["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 5678, "size": 1}]
    assert "resources" not in spec["linux"]
    assert not any(o.startswith(("uid=", "gid=")) for m in spec["mounts"] for o in m.get("options", []))


def test_features() -> None:
    f = oci_spec.features()
    json.dumps(f)  # serialisable
    assert f["ociVersionMin"] == "1.0.0"
    assert f["ociVersionMax"] == inclavare.OCI_VERSION
    assert f["hooks"] == list(oci.HOOK_NAMES)
    assert "rbind" in f["mountOptions"] and f["mountOptions"] == sorted(f["mountOptions"])
    linux = f["linux"]
    assert linux["namespaces"] == ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"]
    assert linux["capabilities"][0] == "CAP_CHOWN" and linux["capabilities"][-1] == "CAP_CHECKPOINT_RESTORE"
    assert linux["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False}
    seccomp = linux["seccomp"]
    assert set(seccomp) == {"enabled", "actions", "operators", "archs", "knownFlags", "supportedFlags"}
    assert "SCMP_ACT_KILL_PROCESS" in seccomp["actions"] and "SCMP_CMP_MASKED_EQ" in seccomp["operators"]
    assert "SCMP_ARCH_X86_64" in seccomp["archs"]
    assert set(seccomp["supportedFlags"]) <= set(seccomp["knownFlags"])
    assert linux["apparmor"] == {"enabled": False} and linux["selinux"] == {"enabled": False}
    assert f["annotations"]["io.github.inclavare-containers.rune.version"] == inclavare.__version__


def test_features_agree_with_runc_where_runc_has_the_same_lists() -> None:
    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("runc is not installed")
    theirs = json.loads(subprocess.run([runc, "features"], check=True, capture_output=True, text=True).stdout)
    ours = oci_spec.features()
    assert ours["hooks"] == theirs["hooks"]
    assert ours["mountOptions"] == theirs["mountOptions"]
    assert ours["linux"]["capabilities"] == theirs["linux"]["capabilities"]
    # We know the time namespace as well; runc 1.1 does not.
    assert set(theirs["linux"]["namespaces"]) <= set(ours["linux"]["namespaces"])
    assert set(theirs["linux"]["seccomp"]["actions"]) == set(ours["linux"]["seccomp"]["actions"])
    assert set(theirs["linux"]["seccomp"]["operators"]) == set(ours["linux"]["seccomp"]["operators"])


def test_validate_config_uses_only_the_callers_stat() -> None:
    """formats/oci.py does no I/O: the root filesystem is looked at only through the `stat` it is handed."""
    spec = oci_spec.default_spec()
    oci.validate_config(spec, "/nonexistent-bundle")  # no stat: root.path is not looked at
    seen: list[str] = []

    def missing(path: str) -> Any:
        seen.append(path)
        raise FileNotFoundError(path)

    with pytest.raises(ConfigError, match=r"^root.path: /nonexistent-bundle/rootfs does not exist$"):
        oci.validate_config(spec, "/nonexistent-bundle", stat=missing)
    assert seen == ["/nonexistent-bundle/rootfs"]


def test_parse_config_rejects_non_objects() -> None:
    with pytest.raises(ConfigError, match=r"^config.json: must be a JSON object$"):
        oci.parse_config(b"[1]")
    with pytest.raises(ConfigError, match=r"^config.json: not valid UTF-8 at byte 1$"):
        oci.parse_config(b"{\xff}")
