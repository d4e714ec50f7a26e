"""epm's SQLite metadata store and the pools over it: typed pools, save/final/pick/list/delete/load, data
copied under root, paths outside root refused, permissions, orphan sweep."""

from __future__ import annotations

import os
import stat

import pytest

from inclavare.services.epm.config import Config
from inclavare.services.epm.errors import EpmError
from inclavare.services.epm.pool import Pools
from inclavare.services.epm.store import CacheRecord, Store


@pytest.fixture
def cfg(tmp_path):
    return Config(root=str(tmp_path / "root"), db_path=str(tmp_path / "db" / "epm.db"),
                  address=str(tmp_path / "run" / "epm.sock"))


@pytest.fixture
def pools(cfg):
    store = Store(cfg.db_path)
    p = Pools(cfg, store)
    yield p
    p.close()
    store.close()


def _code(exc: pytest.ExceptionInfo[EpmError]) -> str:
    return exc.value.code


def test_store_files_are_private(cfg):
    Store(cfg.db_path).close()
    assert stat.S_IMODE(os.stat(os.path.dirname(cfg.db_path)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cfg.db_path).st_mode) == 0o600


def test_store_refuses_a_database_others_can_read(cfg):
    Store(cfg.db_path).close()
    os.chmod(cfg.db_path, 0o644)
    with pytest.raises(EpmError, match="mode 0644 lets other users at it"):
        Store(cfg.db_path)


def test_store_refuses_another_schema(cfg):
    s = Store(cfg.db_path)
    with s._tx("t") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    s.close()
    with pytest.raises(EpmError, match="schema 99"):
        Store(cfg.db_path)


def test_records_survive_reopening_with_opaque_bytes(cfg):
    s = Store(cfg.db_path)
    s.add(CacheRecord("enclave-cache", "a", subtype="sgx", parent=b"\x01\x02", options=b"\x00opaque", size=7,
                      created=11))
    s.close()
    s = Store(cfg.db_path)
    r = s.get("enclave-cache", "a")
    assert (r.subtype, r.parent, r.options, r.size, r.created, r.state) == ("sgx", b"\x01\x02", b"\x00opaque", 7,
                                                                            11, "saved")
    s.close()


def test_types_are_pools_and_unknown_ones_are_refused(pools):
    with pytest.raises(EpmError, match="cache type 'nope': no such pool") as e:
        pools.get("nope", "x")
    assert _code(e) == "INVALID_ARGUMENT"
    pools.save(CacheRecord("enclave-cache", "x"))
    pools.save(CacheRecord("bundle-cache", "x"))  # the same ID in another pool is another cache
    with pytest.raises(EpmError, match="already exists") as e:
        pools.save(CacheRecord("enclave-cache", "x"))
    assert _code(e) == "ALREADY_EXISTS"


def test_pick_takes_only_final_caches_oldest_first_and_removes_them(pools):
    for cid in ("c1", "c2", "c3"):
        pools.save(CacheRecord("enclave-cache", cid, options=cid.encode()))
    with pytest.raises(EpmError, match="no final cache") as e:
        pools.pick("enclave-cache")
    assert _code(e) == "NOT_FOUND"
    pools.finalize("enclave-cache", "c2")
    pools.finalize("enclave-cache", "c1")
    with pytest.raises(EpmError, match="not final") as e:
        pools.pick("enclave-cache", "c3")
    assert _code(e) == "FAILED_PRECONDITION"
    assert pools.pick("enclave-cache").id == "c1"  # saved first
    assert pools.pick("enclave-cache", "c2").options == b"c2"
    with pytest.raises(EpmError, match="not found"):
        pools.get("enclave-cache", "c2")
    assert [r.id for r in pools.list("enclave-cache")] == ["c3"]
    with pytest.raises(EpmError, match="not found") as e:
        pools.finalize("enclave-cache", "c9")
    assert _code(e) == "NOT_FOUND"


def test_a_subtype_narrows_every_request_and_an_empty_one_matches_all(pools, tmp_path):
    """Upstream HEAD's requests all carry a subType (a finer-grained pool inside the type)."""
    src = tmp_path / "root" / "src"
    src.mkdir()
    (src / "f").write_text("x")
    pools.save(CacheRecord("bundle-cache", "a", subtype="occlum"), str(src))
    pools.save(CacheRecord("bundle-cache", "b", subtype="graphene"))
    pools.save(CacheRecord("bundle-cache", "c", subtype="occlum"))
    assert [r.id for r in pools.list("bundle-cache", subtype="occlum")] == ["a", "c"]
    assert [r.id for r in pools.list("bundle-cache", "a", subtype="occlum")] == ["c"]
    assert [r.id for r in pools.list("bundle-cache")] == ["a", "b", "c"]
    assert pools.get("bundle-cache", "a", "occlum").id == pools.get("bundle-cache", "a").id == "a"
    for call in (lambda: pools.get("bundle-cache", "a", "graphene"),
                 lambda: pools.finalize("bundle-cache", "a", "graphene"),
                 lambda: pools.load("bundle-cache", "a", str(tmp_path / "out"), "graphene"),
                 lambda: pools.delete("bundle-cache", "a", "graphene")):
        with pytest.raises(EpmError, match="of subType 'graphene': not found") as e:
            call()
        assert _code(e) == "NOT_FOUND"
    assert not (tmp_path / "out").exists()
    pools.load("bundle-cache", "a", str(tmp_path / "out"), "occlum")
    assert (tmp_path / "out" / "f").read_text() == "x"
    for cid in ("a", "b", "c"):
        pools.finalize("bundle-cache", cid)
    assert pools.pick_matching("bundle-cache", "graphene") and not pools.pick_matching("bundle-cache", "graphene")
    assert [r.id for r in pools.pick_matching("bundle-cache", "occlum")] == ["a"]  # oldest of the subtype
    pools.delete("bundle-cache", "c", "occlum")
    assert pools.list("bundle-cache") == []


def test_pick_matching_returns_at_most_one_and_refuses_unknown_filters(pools):
    for cid in ("p1", "p2", "p3"):
        pools.save(CacheRecord("enclave-cache", cid, subtype="s"))
    pools.finalize("enclave-cache", "p1")
    pools.finalize("enclave-cache", "p2")
    assert pools.pick_matching("enclave-cache", filters={"ID": "p9"}) == []  # nothing matches: nothing picked
    assert [r.id for r in pools.pick_matching("enclave-cache", "s", {"ID": "p2"})] == ["p2"]
    with pytest.raises(EpmError, match="not final") as e:
        pools.pick_matching("enclave-cache", filters={"ID": "p3"})
    assert _code(e) == "FAILED_PRECONDITION"
    for filters, needle in [({"size": "1"}, "filter 'size': not supported"), ({"ID": ""}, "filter ID")]:
        with pytest.raises(EpmError, match=needle) as e:
            pools.pick_matching("enclave-cache", filters=filters)
        assert _code(e) == "INVALID_ARGUMENT"
    with pytest.raises(EpmError, match="no such pool"):
        pools.pick_matching("nope")
    assert [r.id for r in pools.pick_matching("enclave-cache")] == ["p1"]
    assert pools.pick_matching("enclave-cache") == []  # p3 is not final
    assert pools.healthy() and pools.healthy("enclave-cache")
    with pytest.raises(EpmError, match="no such pool"):
        pools.healthy("nope")


def test_list_pages_in_id_order(pools):
    for cid in ("b", "a", "d", "c"):
        pools.save(CacheRecord("bundle-cache", cid))
    assert [r.id for r in pools.list("bundle-cache", limit=2)] == ["a", "b"]
    assert [r.id for r in pools.list("bundle-cache", "b", 2)] == ["c", "d"]
    assert pools.list("bundle-cache", "d") == []
    with pytest.raises(EpmError, match="limit -1"):
        pools.list("bundle-cache", limit=-1)


def test_data_is_copied_under_root_loaded_and_deleted(pools, cfg, tmp_path):
    src = tmp_path / "root" / "incoming" / "bundle"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"A" * 100)
    (src / "sub" / "b.txt").write_text("bee")
    os.symlink("a.bin", src / "link")
    rec = pools.save(CacheRecord("bundle-cache", "img1"), str(src))
    assert rec.owned and rec.size == 103 and rec.save_path.startswith(pools.data + "/")
    (src / "a.bin").write_bytes(b"changed")  # the cache is a copy, not a reference
    target = tmp_path / "work" / "bundle"
    target.parent.mkdir()
    pools.load("bundle-cache", "img1", str(target))
    assert (target / "a.bin").read_bytes() == b"A" * 100 and (target / "sub" / "b.txt").read_text() == "bee"
    assert os.readlink(target / "link") == "a.bin"
    with pytest.raises(EpmError, match="exists") as e:
        pools.load("bundle-cache", "img1", str(target))
    assert _code(e) == "ALREADY_EXISTS"
    pools.delete("bundle-cache", "img1")
    assert not os.path.exists(rec.save_path)
    with pytest.raises(EpmError, match="not found") as e:
        pools.delete("bundle-cache", "img1")
    assert _code(e) == "NOT_FOUND"


def test_paths_outside_root_are_refused(pools, tmp_path):
    outside = tmp_path / "secret"
    outside.write_text("s")
    with pytest.raises(EpmError, match="not inside epm's root") as e:
        pools.save(CacheRecord("bundle-cache", "x"), str(outside))
    assert _code(e) == "PERMISSION_DENIED"
    os.makedirs(pools.root + "/in", exist_ok=True)
    os.symlink(str(outside), pools.root + "/in/escape")  # a symlink under root pointing out is still outside
    with pytest.raises(EpmError, match="not inside epm's root"):
        pools.save(CacheRecord("bundle-cache", "x"), pools.root + "/in/escape")
    with pytest.raises(EpmError, match="savePath .*not inside"):
        pools.save(CacheRecord("bundle-cache", "x", save_path="/etc"))
    with pytest.raises(EpmError, match="sourcePath .*inside epm's data directory"):
        pools.save(CacheRecord("bundle-cache", "x"), pools.data)
    with pytest.raises(EpmError, match="expected an absolute path"):
        pools.save(CacheRecord("bundle-cache", "x"), "relative/path")
    assert pools.list("bundle-cache") == []


def test_special_files_are_refused(pools):
    d = pools.root + "/withfifo"
    os.makedirs(d)
    os.mkfifo(d + "/pipe")
    with pytest.raises(EpmError, match="device, fifo or socket"):
        pools.save(CacheRecord("bundle-cache", "x"), d)
    assert os.listdir(pools.data) == []  # the partial copy is gone


@pytest.mark.parametrize("rec, needle", [
    (CacheRecord("enclave-cache", ""), "cache ID ''"),
    (CacheRecord("enclave-cache", "a\nb"), "not printable ASCII"),
    (CacheRecord("enclave-cache", "x" * 257), "1..256"),
    (CacheRecord("enclave-cache", "x", size=-1), "must not be negative"),
    (CacheRecord("enclave-cache", "x", options=b"o" * ((1 << 20) + 1)), "options is"),
])
def test_bad_records_are_refused(pools, rec, needle):
    with pytest.raises(EpmError, match=None) as e:
        pools.save(rec)
    assert needle in str(e.value)


def test_orphaned_data_is_swept_at_start(pools, cfg):
    src = pools.root + "/in"
    os.makedirs(src)
    with open(src + "/f", "w") as f:
        f.write("x")
    kept = pools.save(CacheRecord("bundle-cache", "kept"), src)
    os.makedirs(pools.data + "/.tmp-deadbeef")  # a copy interrupted by a crash
    os.makedirs(pools.data + "/" + "0" * 64)  # data renamed in, its row never committed
    with pytest.raises(EpmError, match="another epm is using it"):
        Pools(cfg, pools.store)  # the root is locked while the first one is open
    pools.close()
    again = Pools(cfg, pools.store)
    assert os.listdir(again.data) == [os.path.basename(kept.save_path)]
    assert again.healthy()
    again.close()


def test_a_single_file_cache_and_loading_into_an_empty_directory(pools, tmp_path):
    f = pools.root + "/module.wasm"
    with open(f, "wb") as out:
        out.write(b"\0asm")
    rec = pools.save(CacheRecord("bundle-cache", "m"), f)
    assert rec.size == 4 and os.path.isfile(rec.save_path)
    target = tmp_path / "out.wasm"
    pools.load("bundle-cache", "m", str(target))
    assert target.read_bytes() == b"\0asm"
    d = pools.root + "/tree"
    os.makedirs(d)
    with open(d + "/x", "w") as out:
        out.write("x")
    pools.save(CacheRecord("bundle-cache", "t"), d)
    empty = tmp_path / "empty"
    empty.mkdir()
    pools.load("bundle-cache", "t", str(empty))  # an empty work directory is filled
    assert (empty / "x").read_text() == "x"
    with pytest.raises(EpmError, match="does not exist") as e:
        pools.load("bundle-cache", "t", str(tmp_path / "no" / "such"))
    assert _code(e) == "FAILED_PRECONDITION"


def test_loading_a_metadata_only_cache_is_refused(pools, tmp_path):
    pools.save(CacheRecord("enclave-cache", "meta-only"))
    with pytest.raises(EpmError, match="has no data to load") as e:
        pools.load("enclave-cache", "meta-only", str(tmp_path / "t"))
    assert _code(e) == "FAILED_PRECONDITION"


def test_a_root_that_cannot_be_made_is_an_epm_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = Config(root=str(blocker / "root"), db_path=str(tmp_path / "db" / "epm.db"))
    store = Store(cfg.db_path)
    try:
        with pytest.raises(EpmError, match="epm root .*Not a directory"):
            Pools(cfg, store)
    finally:
        store.close()


def test_concurrent_saves_of_one_id_keep_exactly_one(pools):
    import threading

    src = pools.root + "/src"
    os.makedirs(src)
    with open(src + "/f", "w") as out:
        out.write("payload")
    results: list[str] = []

    def save() -> None:
        try:
            pools.save(CacheRecord("bundle-cache", "same"), src)
            results.append("ok")
        except EpmError as e:
            results.append(e.code)

    threads = [threading.Thread(target=save) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ALREADY_EXISTS"] * 5 + ["ok"]
    rec = pools.get("bundle-cache", "same")
    assert os.listdir(pools.data) == [os.path.basename(rec.save_path)]
    with open(rec.save_path + "/f") as f:
        assert f.read() == "payload"


def test_saved_data_is_never_writable_by_others_whatever_the_umask(pools, cfg):
    src = os.path.join(cfg.root, "incoming-file")
    with open(src, "wb") as f:
        f.write(b"module")
    old = os.umask(0)
    try:
        rec = pools.save(CacheRecord("wasm-module", "m1"), src)
    finally:
        os.umask(old)
    assert not os.stat(rec.save_path).st_mode & 0o022
