"""epm's TOML configuration: upstream's keys, defaults, warnings for ignored keys, one-line errors."""

from __future__ import annotations

import pytest

from inclavare.services.epm import config
from inclavare.services.epm.errors import EpmError


def test_upstream_keys_are_read():
    warned: list[str] = []
    cfg = config.parse('root = "/srv/epm"\ndb_path = "/var/lib/epm/epm.db"\ndb_timeout = 5\n'
                       '[grpc]\naddress = "/run/epm/epm.sock"\nmax_recv_message_size = 65536\n'
                       '[cache_pools.occlum]\ntype = "occlum-cache"\n', warn=warned.append)
    assert (cfg.root, cfg.db_path, cfg.db_timeout, cfg.address) == ("/srv/epm", "/var/lib/epm/epm.db", 5,
                                                                    "/run/epm/epm.sock")
    assert cfg.max_recv_message_size == 65536
    assert cfg.pools == ("enclave-cache", "bundle-cache", "wasm-module", "sim-image", "occlum-cache")
    assert warned == []


def test_defaults_put_the_database_under_root():
    cfg = config.parse('root = "/srv/epm"\n')
    assert cfg.db_path == "/srv/epm/epm.db"
    assert cfg.address == config.DEFAULT_ADDRESS


def test_unknown_and_unsupported_keys_are_warned_not_fatal():
    warned: list[str] = []
    config.parse('colour = "blue"\n[grpc]\ntcp_address = "0.0.0.0:1"\nspeed = 3\n', "f.toml", warned.append)
    assert any("unknown key colour" in w for w in warned)
    assert any("tcp_address is not supported" in w for w in warned)
    assert any("unknown key [grpc] speed" in w for w in warned)


@pytest.mark.parametrize("text, needle", [
    ('root = "relative"\n', "root 'relative': expected an absolute path"),
    ("root = 3\n", "root 3"),
    ("db_timeout = 0\n", "db_timeout 0"),
    ("db_timeout = true\n", "db_timeout True"),
    ('[grpc]\naddress = "sock"\n', "[grpc] address"),
    ("[grpc]\nmax_recv_message_size = 1\n", "max_recv_message_size 1"),
    ('grpc = "x"\n', "[grpc] must be a table"),
    ('[cache_pools.x]\ntype = "Bad Type"\n', "[cache_pools.x] type"),
    ('root = "/srv/epm"\ndb_path = "/srv/epm/data/x.db"\n', "inside the cache data directory"),
    ("root = [\n", "not valid TOML"),
])
def test_bad_values_are_one_line_errors_naming_the_key(text, needle):
    with pytest.raises(EpmError) as e:
        config.parse(text, "cfg.toml")
    assert needle in str(e.value) and str(e.value).startswith("cfg.toml: ") and "\n" not in str(e.value)


def test_load_reads_a_file_and_names_it(tmp_path):
    p = tmp_path / "epm.toml"
    p.write_text('root = "/srv/x"\n')
    assert config.load(str(p)).root == "/srv/x"
    with pytest.raises(EpmError, match="epm config .*missing.toml: No such file"):
        config.load(str(tmp_path / "missing.toml"))
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(EpmError, match="not UTF-8"):
        config.load(str(p))


def test_upstreams_stock_config_needs_no_warning():
    warned: list[str] = []
    cfg = config.parse('root = "/var/local/epm"\ndb_path = "/etc/epm/epm.db"\ndb_timeout = 10\n[grpc]\n'
                       'address = "/var/run/epm/epm.sock"\nuid = 0\ngid = 0\n'
                       'max_recv_message_size = 16777216\nmax_send_message_size = 16777216\n', warn=warned.append)
    assert warned == []
    assert (cfg.uid, cfg.gid, cfg.max_send_message_size) == (0, 0, 16 << 20)
    with pytest.raises(EpmError, match="uid -2"):
        config.parse("[grpc]\nuid = -2\n")
