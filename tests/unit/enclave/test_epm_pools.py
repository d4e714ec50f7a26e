"""epm's warm pools from the enclave side (enclave/epm): the client against a real epm server, the wasm pool
(hit, miss, corrupted / tampered artifact ignored, epm down, another wasmtime version), the sim pool (hit, miss,
a wrong record ignored, policy still checked), the forked helper, and the runtimes' ``warm`` hooks."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.enclave import image
from inclavare.enclave.epm import client, trust, warm
from inclavare.enclave.image import EnclaveImageError, EnclaveSettings
from inclavare.enclave.runtimes.sim import SimRuntime
from inclavare.enclave.runtimes.wasm import WasmRuntime
from inclavare.services.epm.store import CacheRecord, Store
from tests.conftest import SRC
from tests.unit.sgx_helpers import rsa3072_e3_key

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="epm's trust rule wants root-owned files")


def exit_module(code: int) -> bytes:
    return (b'(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))'
            b' (memory (export "memory") 1)'
            b' (func (export "_start") (call $exit (i32.const %d))))' % code)


def binary(text: bytes) -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(text.decode()))


class EpmProcess:
    """The real ``epm`` in a child process: the forked helper must not be forked from a process whose gRPC
    server threads are running (as in rune, where the forking process has no gRPC threads at all)."""

    def __init__(self, top: Path) -> None:
        top.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes]
        self.root, self.address = str(top / "root"), str(top / "run" / "epm.sock")
        conf = top / "epm.toml"
        conf.write_text(f'root = "{self.root}"\ndb_path = "{top}/db/epm.db"\n[grpc]\naddress = "{self.address}"\n')
        env = dict(os.environ, PYTHONPATH=str(SRC))
        self.proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.epm", "--config", str(conf)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert self.proc.stdout is not None and self.proc.stdout.readline(), "epm did not start"

    def caches(self, ctype: str) -> list[str]:
        with client.EpmClient.open() as c:  # type: ignore[union-attr]
            reply = c._stub.ListCache(c._pb.ListCacheRequest(type=ctype), timeout=5)
        return [cache.ID for cache in reply.caches]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class Epm(EpmProcess):
    """The real ``epm`` in a child process (no gRPC server threads in the test process: later tests fork) and a
    read-only look at its metadata."""

    def __init__(self, top: Path) -> None:
        super().__init__(top)
        self.db_path = str(top / "db" / "epm.db")

    def record(self, ctype: str, cid: str) -> CacheRecord:
        store = Store(self.db_path)
        try:
            return store.get(ctype, cid)
        finally:
            store.close()

    def records(self, ctype: str) -> list[CacheRecord]:
        store = Store(self.db_path)
        try:
            return store.list(ctype)
        finally:
            store.close()


@pytest.fixture
def epm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Epm]:
    e = Epm(tmp_path / "epm")
    monkeypatch.setenv(client.SOCKET_ENV, e.address)
    monkeypatch.setenv(client.ROOT_ENV, e.root)
    monkeypatch.setattr(client, "_said", False)
    opened: list[client.EpmClient] = []
    real_open = client.EpmClient.open

    def tracked() -> client.EpmClient | None:
        c = real_open()
        if c is not None:
            opened.append(c)
        return c

    monkeypatch.setattr(client.EpmClient, "open", staticmethod(tracked))
    yield e
    for c in opened:  # the pools leave theirs open (the helper exits); the test process must end with none
        c.close()
    e.stop()


def _run(rt: WasmRuntime, path: str) -> int:
    r, w = os.pipe()
    try:
        pid = rt.create_process(path, ["prog"], [], (r, w, w))
        return rt.exec(pid)
    finally:
        os.close(r)
        os.close(w)


# -- wasm pool ------------------------------------------------------------------------------------------------


def test_wasm_miss_compiles_and_saves_then_hits(epm: Epm, monkeypatch: pytest.MonkeyPatch) -> None:
    module = exit_module(3)
    first = warm.wasm_prefetch(module, 0)
    assert isinstance(first, bytes) and first
    sha = hashlib.sha256(module).hexdigest()
    key = warm.wasm_key(sha, 0)
    rec = epm.record(warm.POOL_WASM, key)
    assert rec.state == "final" and os.path.dirname(rec.save_path) == os.path.join(os.path.realpath(epm.root), "data")
    assert Path(rec.save_path).read_bytes() == first
    assert not os.listdir(os.path.join(epm.root, client.INCOMING))  # the staged copy is gone

    def no_compile(*_a: Any) -> bytes:
        raise AssertionError("a hit must not compile")

    monkeypatch.setattr(warm, "wasm_compile_and_save", no_compile)
    assert warm.wasm_prefetch(module, 0) == first
    # fuel is part of the engine configuration, hence of the key: a different one is a miss
    assert warm.wasm_key(sha, 1000) != key
    with client.EpmClient.open() as c:  # type: ignore[union-attr]
        assert warm.wasm_from_pool(c, module, 1000) is None


def test_the_runtime_runs_the_precompiled_module(tmp_path: Path) -> None:
    """A primed module is deserialized, not compiled: offered module B's code for module A's bytes, it runs B
    (which is why a pool artifact must pass the trust rule)."""
    a, b = exit_module(3), exit_module(5)
    path = tmp_path / "a.wat"
    path.write_bytes(a)
    serialized_b = warm.wasm_compile_and_save(None, b, 0)
    assert serialized_b is not None
    rt = WasmRuntime()
    rt.load({})
    rt.prime(hashlib.sha256(a).hexdigest(), 0, serialized_b)
    rt.init(f"preopen={tmp_path}", "info")
    try:
        assert _run(rt, str(path)) == 5
    finally:
        rt.destroy()
    rt = WasmRuntime()  # a fuel setting the artifact was not built for: compiled, runs A
    rt.load({})
    rt.prime(hashlib.sha256(a).hexdigest(), 0, serialized_b)
    rt.init(f"preopen={tmp_path} fuel=100000", "info")
    try:
        assert _run(rt, str(path)) == 3
    finally:
        rt.destroy()


def test_a_precompiled_module_that_does_not_load_is_compiled(tmp_path: Path) -> None:
    a = exit_module(3)
    path = tmp_path / "a.wat"
    path.write_bytes(a)
    rt = WasmRuntime()
    rt.load({})
    rt.prime(hashlib.sha256(a).hexdigest(), 0, b"not a serialized module")
    rt.init(f"preopen={tmp_path}", "info")
    try:
        assert _run(rt, str(path)) == 3
    finally:
        rt.destroy()


@pytest.mark.parametrize("how", ["corrupted", "truncated", "group-writable", "not-root", "symlink"])
def test_a_tampered_artifact_is_ignored(epm: Epm, how: str) -> None:
    module = exit_module(4)
    assert warm.wasm_prefetch(module, 0)
    path = epm.record(warm.POOL_WASM, warm.wasm_key(hashlib.sha256(module).hexdigest(), 0)).save_path
    if how == "corrupted":
        data = bytearray(Path(path).read_bytes())
        data[len(data) // 2] ^= 0xFF
        Path(path).write_bytes(bytes(data))
    elif how == "truncated":
        os.truncate(path, os.path.getsize(path) // 2)
    elif how == "group-writable":
        os.chmod(path, 0o664)
    elif how == "not-root":
        os.chown(path, 1000, 1000)
    else:
        real = path + ".real"
        os.rename(path, real)
        os.symlink(real, path)
    with client.EpmClient.open() as c:  # type: ignore[union-attr]
        assert warm.wasm_from_pool(c, module, 0) is None


def test_the_trust_rule_wants_epms_root_and_a_safe_directory_chain(epm: Epm, tmp_path: Path) -> None:
    blob = b"artifact"
    digest = hashlib.sha256(blob).hexdigest()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x").write_bytes(blob)
    assert trust.read_trusted(str(outside / "x"), digest, 100) is None  # not in epm's data directory
    data = os.path.join(os.path.realpath(epm.root), "data")
    Path(data, "x").write_bytes(blob)
    os.chmod(os.path.join(data, "x"), 0o644)
    assert trust.read_trusted(os.path.join(data, "x"), digest, 100) == blob
    assert trust.read_trusted(os.path.join(data, "x"), "0" * 64, 100) is None  # not the recorded digest
    assert trust.read_trusted(os.path.join(data, "x"), digest, 4) is None  # too big
    for mode in (0o770, 0o707):  # epm's own directory: neither group nor others may write it
        os.chmod(epm.root, mode)
        try:
            assert trust.read_trusted(os.path.join(data, "x"), digest, 100) is None
        finally:
            os.chmod(epm.root, 0o700)
    above = os.path.dirname(os.path.realpath(epm.root))
    old = os.stat(above).st_mode
    try:
        os.chmod(above, 0o2775)  # like Debian's /var/local (root:staff 2775): group write above epm's root is fine
        assert trust.read_trusted(os.path.join(data, "x"), digest, 100) == blob
        os.chmod(above, 0o757)  # others could replace epm's root
        assert trust.read_trusted(os.path.join(data, "x"), digest, 100) is None
        os.chmod(above, 0o1777)  # unless sticky
        assert trust.read_trusted(os.path.join(data, "x"), digest, 100) == blob
    finally:
        os.chmod(above, stat.S_IMODE(old))


def test_another_wasmtime_version_is_a_miss(epm: Epm, monkeypatch: pytest.MonkeyPatch) -> None:
    module = exit_module(6)
    assert warm.wasm_prefetch(module, 0)
    sha = hashlib.sha256(module).hexdigest()
    real = warm.wasmtime_version()
    assert warm.wasm_key(sha, 0, "0.0.1") != warm.wasm_key(sha, 0, real)
    monkeypatch.setattr(warm, "wasmtime_version", lambda: "0.0.1")
    with client.EpmClient.open() as c:  # type: ignore[union-attr]
        assert warm.wasm_from_pool(c, module, 0) is None


def test_epm_down_or_not_roots_means_no_pool(epm: Epm, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.available()
    os.chown(epm.address, 1000, 1000)  # a socket someone else owns is not epm
    assert not client.available() and client.EpmClient.open() is None
    os.chown(epm.address, 0, 0)
    os.chmod(epm.address, 0o666)  # others could save records rune would trust
    assert not client.available()
    os.chmod(epm.address, 0o600)
    assert client.available()
    epm.proc.kill()  # the socket file is left, nobody answers
    epm.proc.wait(20)
    c = client.EpmClient.open()
    assert c is not None and c.get(warm.POOL_WASM, "x") is None and c.down
    assert warm.wasm_prefetch(exit_module(1), 0) is None
    assert warm.sim_prefetch(b"anything", 0) == (None, None)
    monkeypatch.setenv(client.SOCKET_ENV, "/nonexistent/epm.sock")
    assert not client.available()


# -- sim pool -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> Any:
    return rsa3072_e3_key(0)


def signed_image(key: Any, payload: bytes | None = None, debug: bool = False) -> bytes:
    payload = payload or binary(exit_module(9))
    settings = EnclaveSettings(isvprodid=1, heap_size=4 * 4096, stack_size=4 * 4096, debug=debug)
    return image.sign(image.build(payload, "wasm", settings, date=datetime.date(2026, 12, 7)), key)


def test_sim_miss_verifies_and_saves_then_hits(epm: Epm, key: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    data = signed_image(key)
    mrenclave, serialized = warm.sim_prefetch(data, 0)
    assert mrenclave == image.load(data).mrenclave and isinstance(serialized, bytes)
    rec = epm.record(warm.POOL_SIM, hashlib.sha256(data).hexdigest())
    assert rec.save_path == "" and rec.state == "final"
    # the payload's wasm module went to the wasm pool too
    epm.record(warm.POOL_WASM, warm.wasm_key(hashlib.sha256(binary(exit_module(9))).hexdigest(), 0))

    def no_check(*_a: Any) -> bytes:
        raise AssertionError("a hit must not re-check the image")

    monkeypatch.setattr(warm, "sim_verify_and_save", no_check)
    monkeypatch.setattr(warm, "wasm_compile_and_save", no_check)
    assert warm.sim_prefetch(data, 0) == (mrenclave, serialized)


def test_a_bad_image_is_not_saved(epm: Epm, key: Any) -> None:
    data = bytearray(signed_image(key))
    data[image.HEADER_SIZE + image.SETTINGS_SIZE + 3] ^= 1  # payload changed after signing
    assert warm.sim_prefetch(bytes(data), 0) == (None, None)
    assert epm.records(warm.POOL_SIM) == []


def test_premeasured_load_skips_measuring_and_rsa_but_not_policy(key: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from inclavare.sgx import signing

    data = signed_image(key, debug=True)
    full = image.load(data)
    sha = hashlib.sha256(data).hexdigest()

    def fail(*_a: Any) -> Any:
        raise AssertionError("measured or RSA-checked")

    monkeypatch.setattr(signing, "verify", fail)
    monkeypatch.setattr(image, "_measure", fail)
    assert image.load(data, premeasured={sha: full.mrenclave}) == full
    with pytest.raises(EnclaveImageError, match="expected"):
        image.load(data, premeasured={sha: full.mrenclave}, expected_mrsigner=bytes(32))
    with pytest.raises(EnclaveImageError, match="debug enclave images are not allowed"):
        image.load(data, premeasured={sha: full.mrenclave}, allow_debug=False)
    # a record whose measurement is not the SIGSTRUCT's: the full check runs (here: the patched one fails)
    with pytest.raises(AssertionError, match="measured or RSA-checked"):
        image.load(data, premeasured={sha: bytes(32)})
    # another file (one byte changed): not the recorded one, full check
    changed = bytearray(data)
    changed[-1] ^= 1
    with pytest.raises(AssertionError, match="measured or RSA-checked"):
        image.load(bytes(changed), premeasured={sha: full.mrenclave})


# -- the helper and the runtimes' warm hooks ------------------------------------------------------------------


def test_in_helper_returns_the_childs_result_or_none() -> None:
    assert warm.in_helper(lambda x: (os.getpid(), x * 2), 21)[1] == 42
    assert warm.in_helper(lambda: os.getpid()) != os.getpid()

    def boom() -> None:
        raise RuntimeError("boom")

    assert warm.in_helper(boom) is None
    assert warm.in_helper(lambda: __import__("time").sleep(30), timeout=0.2) is None


def _channels() -> list[int]:
    """This process's descriptors above stdio that are not anonymous inodes (epoll, eventfd, pidfd: no channel;
    a helper keeps them, see helper._close_inherited)."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("anon_inode:"):
                fds.append(int(name))
        except OSError:  # the listing's own descriptor
            pass
    return sorted(f for f in fds if f > 2)


def test_a_helper_keeps_only_its_pipe_and_a_descendant_reads_its_result(tmp_path: Path) -> None:
    """The container's init (a grandchild of the process that started the helper) reads the answer; the helper
    holds none of the caller's descriptors (a channel it kept open would hide the caller's death)."""
    keep = os.open(str(tmp_path), os.O_RDONLY)
    os.set_inheritable(keep, True)
    try:
        helper = warm.Helper.start(_channels)
        assert helper is not None
        pid = os.fork()
        if pid == 0:
            fds = helper.result(10)
            os._exit(0 if fds is not None and keep not in fds and len(fds) == 1 else 1)  # its socket
        _, status = os.waitpid(pid, 0)
        helper.close(kill=False)
    finally:
        os.close(keep)
    assert status == 0


def _bundle(tmp_path: Path, files: dict[str, bytes], args: list[str]) -> dict[str, Any]:
    root = tmp_path / "rootfs"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return {"root": {"path": str(root)}, "process": {"args": args, "env": ["PATH=/bin"]}}


def _fresh(scenario: str, top: Path) -> dict[str, Any]:
    """Run ``scenario(top)`` of this module in a fresh interpreter; its JSON result. The forked helper's gRPC
    must not be forked from a process where gRPC threads are busy (this test process ran an epm server; rune's
    container init never has any)."""
    env = dict(os.environ, PYTHONPATH=f"{SRC}:{SRC.parent}", **{warm.MIN_BYTES_ENV: "0"})
    code = (f"import json, sys; from tests.unit.enclave import test_epm_pools as t; "
            f"print(json.dumps(t.{scenario}(sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", code, str(top)], env=env, cwd=SRC.parent, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def scenario_wasm_warm(top: str) -> dict[str, Any]:
    tmp = Path(top)
    e = EpmProcess(tmp / "epmp")
    os.environ[client.SOCKET_ENV], os.environ[client.ROOT_ENV] = e.address, e.root
    try:
        module = exit_module(7)
        spec = _bundle(tmp, {"bin/app.wat": module}, ["app.wat"])
        rt = WasmRuntime()
        rt.load(spec)
        rt.warm("", spec)
        sha = hashlib.sha256(module).hexdigest()
        started = rt._pending is not None and not rt._precompiled  # read when the module is compiled
        rt.init(f"preopen={tmp}", "info")
        try:
            status = _run(rt, str(tmp / "rootfs" / "bin" / "app.wat"))
        finally:
            rt.destroy()
        return {"primed": (sha, 0) in rt._precompiled, "status": status, "key": warm.wasm_key(sha, 0),
                "started": started, "saved": e.caches(warm.POOL_WASM)}
    finally:
        e.stop()


def test_wasm_runtime_warm_fetches_through_the_helper(tmp_path: Path) -> None:
    got = _fresh("scenario_wasm_warm", tmp_path)
    assert got["started"] and got["primed"] and got["status"] == 7
    assert got["saved"] == [got["key"]]  # saved by the helper


def scenario_sim_warm(top: str) -> dict[str, Any]:
    from inclavare.sgx import signing

    tmp = Path(top)
    e = EpmProcess(tmp / "epmp")
    os.environ[client.SOCKET_ENV], os.environ[client.ROOT_ENV] = e.address, e.root
    try:
        data = signed_image(rsa3072_e3_key(0))
        spec = _bundle(tmp, {"enclave/enclave.img": data}, ["/app"])
        rt = SimRuntime()
        rt.wasm = WasmRuntime()
        rt.wasm.load(spec)
        rt.warm("", spec)
        started = rt._pending is not None and not rt._premeasured  # read by pal_init, not before

        def fail(*_a: Any) -> Any:
            raise AssertionError("measured or RSA-checked")

        signing.verify, image._measure = fail, fail  # this interpreter ends with the scenario
        rt.init(f"image={tmp / 'rootfs' / 'enclave' / 'enclave.img'}", "info")
        loaded = rt.image.mrenclave.hex()
        premeasured = {k: v.hex() for k, v in rt._premeasured.items()}
        primed = bool(rt.wasm._precompiled)
        rt.destroy()
        return {"premeasured": premeasured, "primed": primed, "loaded": loaded, "sha": hashlib.sha256(data).hexdigest(),
                "saved": e.caches(warm.POOL_SIM), "started": started}
    finally:
        e.stop()


def test_sim_runtime_warm_then_init_uses_the_record(key: Any, tmp_path: Path) -> None:
    got = _fresh("scenario_sim_warm", tmp_path)
    mrenclave = image.load(signed_image(key)).mrenclave.hex()
    assert got["started"] and got["premeasured"] == {got["sha"]: mrenclave}
    assert got["primed"]  # the payload, precompiled
    assert got["loaded"] == mrenclave  # init took the recorded measurement: verify and _measure were disabled
    assert got["saved"] == [got["sha"]]


def test_small_files_skip_the_pools(epm: Epm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _bundle(tmp_path, {"app.wat": exit_module(1), "enclave/enclave.img": b"x" * 100}, ["/app.wat"])
    monkeypatch.setattr(warm.Helper, "start", lambda *_a, **_k: pytest.fail("asked epm for a small file"))
    rt = WasmRuntime()
    rt.load(spec)
    rt.warm("", spec)
    SimRuntime().warm("", spec)
    assert rt._precompiled == {}


def test_warm_without_epm_does_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(client.SOCKET_ENV, str(tmp_path / "none.sock"))
    monkeypatch.setenv(warm.MIN_BYTES_ENV, "0")
    spec = _bundle(tmp_path, {"app.wat": exit_module(1)}, ["/app.wat"])
    monkeypatch.setattr(warm.Helper, "start", lambda *_a, **_k: pytest.fail("forked without epm"))
    rt = WasmRuntime()
    rt.load(spec)
    rt.warm("", spec)
    assert rt._precompiled == {}


def test_host_file_stays_inside_the_containers_root(tmp_path: Path) -> None:
    spec = _bundle(tmp_path, {"real/app.wat": b"inside", "etc/hostname": b"container's"}, ["/app.wat"])
    root = tmp_path / "rootfs"
    (root / "app.wat").symlink_to("/real/app.wat")
    (root / "escape").symlink_to("../../../../../../../etc/hostname")
    (root / "abs").symlink_to("/etc/hostname")
    assert warm.host_file(spec, "/app.wat") == b"inside"
    assert warm.host_file(spec, "/escape") == b"container's"
    assert warm.host_file(spec, "/abs") == b"container's"
    assert warm.host_file(spec, "/real") is None  # a directory
    assert warm.host_file(spec, "relative") is None
    assert warm.find_in_container(spec, "app.wat") is None  # PATH=/bin
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"x")
    assert warm.find_in_container(spec, "tool") == "/bin/tool"


def test_the_size_threshold_depends_on_whether_grpc_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.delenv(warm.MIN_BYTES_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "grpc", sys.modules.get("grpc") or object())
    assert warm.min_bytes() == 16 << 10
    monkeypatch.delitem(sys.modules, "grpc")
    assert warm.min_bytes() == 256 << 10  # the helper would import it first
    monkeypatch.setenv(warm.MIN_BYTES_ENV, "123")
    assert warm.min_bytes() == 123
