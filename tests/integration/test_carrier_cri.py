"""Carriers on the Kubernetes path: containerd's CRI plugin with rune-shim handlers, a wasm app image selected
by the annotation ``enclave.carrier`` (the handler passes ``enclave.*`` container annotations into the OCI
spec) or by the handler's own ``EnclaveCarrier`` option; two pods of one image build once (the cache's
counters say so)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import is_root, needs_busybox
from tests.integration.cri_rig import start_with_test_images
from tests.integration.test_carrier import WASM_IMAGE, wasm_image_tar, write_node_config
from tests.unit.sgx_helpers import rsa3072_e3_pem

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="needs root (containerd, namespaces, mounts, cgroups)"),
    pytest.mark.skipif(not (shutil.which("containerd") and shutil.which("ctr")),
                       reason="containerd/ctr are not installed (Debian package containerd)"),
    pytest.mark.skipif(shutil.which("gcc") is None and not os.environ.get("CC"),
                       reason="gcc is needed to build the pod sandbox (pause) image (scripts/setup.sh installs it)"),
    needs_busybox,
]

pb = pytest.importorskip("inclavare.testing.cri.api_pb2", reason="grpcio/protobuf are not installed")

ANNOTATED = "rune-carrier"  # passes enclave.* annotations through
WASM_HANDLER = "rune-wasm"  # EnclaveCarrier = "wasm" in its options TOML


@pytest.fixture(scope="module")
def ctrd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from inclavare.testing.cri.containerd import CriContainerd, RuntimeHandler

    base = tmp_path_factory.mktemp("carriercri")
    key = base / "signing.pem"
    key.write_bytes(rsa3072_e3_pem(0))
    key.chmod(0o600)
    conf = base / "config.toml"
    write_node_config(conf, key, base / "cache")
    opts = base / "rune-wasm.toml"
    opts.write_text('EnclaveCarrier = "wasm"\n')
    rune = RuntimeHandler.rune_shim()
    c = CriContainerd(str(base / "c"), {
        ANNOTATED: RuntimeHandler(rune.runtime_type, container_annotations=("enclave.*",)),
        WASM_HANDLER: RuntimeHandler(rune.runtime_type, {"ConfigPath": str(opts)})})
    c.install_rune_shim(str(base / "rune-shim-root"), env={"INCLAVARE_SHIM_CONFIG": str(conf),
                                                           "INCLAVARE_SIM_STATE_DIR": str(base / "sim")})
    c.cache_root = str(base / "cache")  # type: ignore[attr-defined]
    try:
        start_with_test_images(c, str(base))
        c.import_image(wasm_image_tar(base))
        yield c
    finally:
        c.purge()


@pytest.fixture
def env(ctrd: Any) -> Iterator[Any]:
    from tests.integration.test_cri import CriEnv

    e = CriEnv(ctrd)
    try:
        yield e
    finally:
        e.cleanup()
        e.cri.close()


def stats(ctrd: Any) -> Any:
    from inclavare.services.bundlecache import BundleCache

    with BundleCache(ctrd.cache_root) as c:
        return c.stats()


def run_app(env: Any, handler: str, name: str, annotations: dict[str, str] | None = None) -> tuple[Any, str]:
    pod = env.run_pod(handler, name=name)
    cid = env.cri.create_container(pod, name, WASM_IMAGE, log_path=f"{name}.log", annotations=annotations)
    env.cri.start_container(cid)
    st = env.wait_state(cid, pb.CONTAINER_EXITED, timeout=60)
    assert st.exit_code == 0, st
    log = Path(env.ctrd.log_root) / pod.config.metadata.uid / f"{name}.log"
    text = [line.split(" ", 3)[3] for line in log.read_text().splitlines()]
    env.cri.remove_container(cid)
    env.stop_pod(pod.id)
    env.cri.remove_pod(pod.id)
    return pod, "\n".join(text)


def test_annotation_selects_the_wasm_carrier_and_the_second_pod_hits(env: Any) -> None:
    before = stats(env.ctrd)
    _, out = run_app(env, ANNOTATED, "wasm1", {"enclave.carrier": "wasm"})
    assert out == "hello from a carried enclave"
    first = stats(env.ctrd)
    _, out = run_app(env, ANNOTATED, "wasm2", {"enclave.carrier": "wasm"})
    assert out == "hello from a carried enclave"
    second = stats(env.ctrd)
    assert second.builds == first.builds and second.hits == first.hits + 1
    assert first.builds - before.builds in (0, 3)  # 0 when another test of this module built it first
    env.assert_nothing_left(ANNOTATED, [])


def test_runtime_handler_option_selects_the_carrier(env: Any) -> None:
    _, out = run_app(env, WASM_HANDLER, "wasm3")
    assert out == "hello from a carried enclave"
    env.assert_nothing_left(WASM_HANDLER, [])
