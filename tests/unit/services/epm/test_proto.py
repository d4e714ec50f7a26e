"""epm.proto keeps upstream's wire contract at upstream HEAD (inclavare-containers e763463d, api.proto from
ca417352, epm/pkg/epm-api/v1alpha1 api.proto + enclave.proto): package, service, methods and every field's number
and type, so upstream's Go clients interoperate."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor as F

from inclavare.enclave.epm.proto import epm_pb2 as pb

S, I64, U64, I32, B, M = F.TYPE_STRING, F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_INT32, F.TYPE_BOOL, F.TYPE_MESSAGE
UPSTREAM = {
    "Cache": {"type": (1, S), "subType": (2, S), "ID": (3, S), "savePath": (4, S), "parent": (5, M),
              "size": (6, I64), "created": (7, I64), "options": (8, M)},
    "GetCacheRequest": {"type": (1, S), "subType": (2, S), "ID": (3, S)},
    "GetCacheResponse": {"cache": (1, M)},
    "PickCacheRequest": {"type": (1, S), "subType": (2, S), "filters": (3, M)},
    "PickCacheResponse": {"caches": (1, M)},
    "SaveCacheRequest": {"cache": (1, M), "sourcePath": (2, S)},
    "SaveCacheResponse": {"ok": (1, B)},
    "ListCacheRequest": {"type": (1, S), "subType": (2, S), "lastCacheID": (3, S), "limit": (4, I32)},
    "ListCacheResponse": {"caches": (1, M)},
    "DeleteCacheRequest": {"type": (1, S), "subType": (2, S), "ID": (3, S)},
    "DeleteCacheResponse": {"ok": (1, B)},
    "LoadCacheRequest": {"type": (1, S), "subType": (2, S), "ID": (3, S), "targetPath": (4, S)},
    "LoadCacheResponse": {"ok": (1, B)},
    "HealthzRequest": {"type": (1, S)},
    "HealthzResponse": {"ok": (1, B)},
    "Enclave": {"fd": (1, I64), "nr": (2, I64), "layout": (3, M)},
    "Enclavelayout": {"addr": (1, U64), "size": (2, U64), "prot": (3, M)},
    "EnclavePerms": {"read": (1, B), "write": (2, B), "execute": (3, B), "share": (4, B), "private": (5, B)},
}
REPEATED = {("PickCacheResponse", "caches"), ("ListCacheResponse", "caches"), ("Enclave", "layout"),
            ("PickCacheRequest", "filters")}


def test_messages_have_upstreams_fields():
    for name, fields in UPSTREAM.items():
        desc = pb.DESCRIPTOR.message_types_by_name[name]
        assert desc.full_name == f"v1alpha1.{name}"
        got = {f.name: (f.number, f.type) for f in desc.fields}
        assert got == fields, name
    assert pb.Cache.DESCRIPTOR.fields_by_name["options"].message_type.full_name == "google.protobuf.Any"
    assert pb.Cache.DESCRIPTOR.fields_by_name["parent"].message_type.full_name == "v1alpha1.Cache"
    for name, fields in UPSTREAM.items():
        for fname in fields:
            assert pb.DESCRIPTOR.message_types_by_name[name].fields_by_name[fname].is_repeated == \
                ((name, fname) in REPEATED), (name, fname)
    filters = pb.PickCacheRequest.DESCRIPTOR.fields_by_name["filters"].message_type
    assert filters.GetOptions().map_entry  # map<string, string>
    assert {f.name: f.type for f in filters.fields} == {"key": S, "value": S}
    assert set(pb.DESCRIPTOR.message_types_by_name) == set(UPSTREAM)  # nothing of ours beside upstream's


def test_service_has_upstreams_methods():
    svc = pb.DESCRIPTOR.services_by_name["EnclavePoolManager"]
    assert svc.full_name == "v1alpha1.EnclavePoolManager"
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in svc.methods}
    assert methods == {
        "GetCache": ("GetCacheRequest", "GetCacheResponse"),
        "PickCache": ("PickCacheRequest", "PickCacheResponse"),
        "SaveCache": ("SaveCacheRequest", "SaveCacheResponse"),
        "SaveFinalCache": ("SaveCacheRequest", "SaveCacheResponse"),
        "ListCache": ("ListCacheRequest", "ListCacheResponse"),
        "DeleteCache": ("DeleteCacheRequest", "DeleteCacheResponse"),
        "LoadCache": ("LoadCacheRequest", "LoadCacheResponse"),
        "Healthz": ("HealthzRequest", "HealthzResponse"),
    }
