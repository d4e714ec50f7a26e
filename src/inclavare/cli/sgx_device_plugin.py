"""`inclavare-sgx-device-plugin`: the kubelet device plugin for SGX (see inclavare.services.sgxdeviceplugin).

    inclavare-sgx-device-plugin [--sim] [--sim-epc-mib N] [--resources LIST] [--enclave-limit N]
        [--provision-limit N] [--device-plugin-dir DIR] [--kubelet-socket PATH] [--dev-dir DIR]
        [--aesmd-dir DIR] [--sysfs-nodes DIR] [--epc-nfd-file PATH] [--interval SECONDS]

Serves one v1beta1 DevicePlugin per resource on its own socket in the device-plugin directory and keeps each
registered with kubelet. Once serving, one JSON line goes to stdout: ``{"ready": true, "mode": "sgx"|"sim",
"epc_bytes": N, "kubelet_socket": ..., "resources": {NAME: {"socket": PATH, "devices": N}}}``; what happens
next (registrations, kubelet restarts, health changes, refused allocations) is logged one line each to stderr.
SIGTERM / SIGINT stop it, removing its sockets (exit 0). Bad flags: exit 2; a start-up failure: one line, exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence

from inclavare.cli._common import Parser, run_program
from inclavare.errors import UsageError

PROG = "inclavare-sgx-device-plugin"
DEFAULT_SIM_EPC_MIB = 64
DEFAULT_LIMIT = 110  # Intel's plugin: as many enclave/provision slots as kubelet's default pod limit


def _count(text: str) -> int:
    from inclavare.services.sgxdeviceplugin.resources import MAX_DEVICES

    if not text.isdigit() or not 1 <= int(text) <= MAX_DEVICES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from 1 to {MAX_DEVICES}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.05 <= v <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds from 0.05 to 3600")
    return v


def build_parser() -> argparse.ArgumentParser:
    from inclavare.services.sgxdeviceplugin import resources, server

    p = Parser(prog=PROG, description="Kubernetes device plugin advertising SGX EPC and SGX device access.")
    p.add_argument("--sim", action="store_true", help="simulated SGX even if the host has SGX devices")
    p.add_argument("--sim-epc-mib", type=_count, default=DEFAULT_SIM_EPC_MIB, metavar="N",
                   help=f"simulated EPC in MiB (sim mode; default {DEFAULT_SIM_EPC_MIB})")
    p.add_argument("--resources", default=",".join(resources.ALL), metavar="LIST",
                   help=f"comma-separated resources to serve (default {','.join(resources.ALL)})")
    p.add_argument("--enclave-limit", type=_count, default=DEFAULT_LIMIT, metavar="N",
                   help=f"{resources.ENCLAVE} slots (default {DEFAULT_LIMIT})")
    p.add_argument("--provision-limit", type=_count, default=DEFAULT_LIMIT, metavar="N",
                   help=f"{resources.PROVISION} slots (default {DEFAULT_LIMIT})")
    p.add_argument("--device-plugin-dir", default=server.DEVICE_PLUGIN_DIR, metavar="DIR",
                   help=f"where kubelet looks for plugin sockets (default {server.DEVICE_PLUGIN_DIR})")
    p.add_argument("--kubelet-socket", metavar="PATH", help="kubelet's registration socket (default "
                   "DIR/kubelet.sock)")
    p.add_argument("--dev-dir", default="/dev", metavar="DIR", help="where the SGX device nodes are (default /dev)")
    p.add_argument("--aesmd-dir", default="/var/run/aesmd", metavar="DIR",
                   help="host directory of aesmd's socket, mounted into SGX containers (default /var/run/aesmd)")
    p.add_argument("--sysfs-nodes", default="/sys/devices/system/node", metavar="DIR",
                   help="sysfs NUMA node directory read for x86/sgx_total_bytes (default /sys/devices/system/node)")
    p.add_argument("--epc-nfd-file", metavar="PATH", help=f"also write '{resources.EPC_BYTES}=<bytes>' to this "
                   "NFD feature file (e.g. /etc/kubernetes/node-feature-discovery/features.d/sgx-epc)")
    p.add_argument("--interval", type=_seconds, default=1.0, metavar="SECONDS",
                   help="how often to check kubelet's socket, ours and device health (default 1)")
    return p


def serve(args: argparse.Namespace) -> int:
    from inclavare.services.sgxdeviceplugin import platform, resources
    from inclavare.services.sgxdeviceplugin.errors import DevicePluginError
    from inclavare.services.sgxdeviceplugin.server import Manager

    def log(msg: str) -> None:
        sys.stderr.write(f"{PROG}: {msg}\n")
        sys.stderr.flush()

    names = tuple(n.strip() for n in args.resources.split(",") if n.strip())
    unknown = [n for n in names if n not in resources.ALL]
    if unknown or not names or len(set(names)) != len(names):
        hint = " (it is a node-level extended resource; see --epc-nfd-file)" if resources.EPC_BYTES in unknown else ""
        raise UsageError(f"--resources {args.resources!r}: expected distinct names among "
                         f"{', '.join(resources.ALL)}{hint}")
    hardware = bool(platform.device_nodes(args.dev_dir, platform.ENCLAVE_NODES))
    sim = args.sim or not hardware
    if sim:
        epc_mib = args.sim_epc_mib
        why = "--sim" if args.sim else f"no SGX device ({', '.join(platform.ENCLAVE_NODES)}) under {args.dev_dir}"
        log(f"SIMULATED SGX ({why}): advertising {epc_mib} MiB of simulated EPC; device IDs start with 'sim-', "
            f"containers get no SGX device and {resources.ENV_TYPE}=sim")
    else:
        try:
            epc_mib = min(platform.epc_bytes(args.sysfs_nodes) // platform.MIB, resources.MAX_DEVICES)
            unknown_why = "no sgx_total_bytes in sysfs, no EPC in CPUID"
        except DevicePluginError as e:  # under-reporting is the safe side: no EPC is advertised
            epc_mib, unknown_why = 0, str(e)
        log(f"SGX host: {epc_mib} MiB of EPC, device nodes under {args.dev_dir}")
        if epc_mib == 0:
            log(f"warning: EPC size unknown ({unknown_why}); {resources.EPC_MIB} advertises no devices")
    epc_bytes = epc_mib * platform.MIB
    if args.epc_nfd_file:
        platform.write_nfd_feature_file(args.epc_nfd_file, epc_bytes)
        log(f"wrote {resources.EPC_BYTES}={epc_bytes}{' (simulated)' if sim else ''} to {args.epc_nfd_file}")
    res = resources.build(sim=sim, epc_mib=epc_mib, enclave_limit=args.enclave_limit,
                          provision_limit=args.provision_limit, dev_dir=args.dev_dir, aesmd_dir=args.aesmd_dir,
                          names=names)
    kubelet = args.kubelet_socket or os.path.join(args.device_plugin_dir, "kubelet.sock")
    stop = threading.Event()
    saved = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    mgr = Manager(res, args.device_plugin_dir, kubelet, log)
    try:
        mgr.start()
        print(json.dumps({"ready": True, "mode": "sim" if sim else "sgx", "epc_bytes": epc_bytes,
                          "kubelet_socket": kubelet,
                          "resources": {s.resource.name: {"socket": s.path, "devices": len(s.resource.ids)}
                                        for s in mgr.servers}}), flush=True)
        while not stop.wait(args.interval):
            try:
                mgr.tick()
            except DevicePluginError as e:
                log(str(e))
    finally:
        mgr.stop()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    log("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_program(PROG, build_parser(), serve, argv, usage_status=2)


if __name__ == "__main__":
    sys.exit(main())
