from google.protobuf import any_pb2 as _any_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Cache(_message.Message):
    __slots__ = ("type", "subType", "ID", "savePath", "parent", "size", "created", "options")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBTYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SAVEPATH_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    type: str
    subType: str
    ID: str
    savePath: str
    parent: Cache
    size: int
    created: int
    options: _any_pb2.Any
    def __init__(self, type: _Optional[str] = ..., subType: _Optional[str] = ..., ID: _Optional[str] = ..., savePath: _Optional[str] = ..., parent: _Optional[_Union[Cache, _Mapping]] = ..., size: _Optional[int] = ..., created: _Optional[int] = ..., options: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...

class GetCacheRequest(_message.Message):
    __slots__ = ("type", "subType", "ID")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBTYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    type: str
    subType: str
    ID: str
    def __init__(self, type: _Optional[str] = ..., subType: _Optional[str] = ..., ID: _Optional[str] = ...) -> None: ...

class GetCacheResponse(_message.Message):
    __slots__ = ("cache",)
    CACHE_FIELD_NUMBER: _ClassVar[int]
    cache: Cache
    def __init__(self, cache: _Optional[_Union[Cache, _Mapping]] = ...) -> None: ...

class PickCacheRequest(_message.Message):
    __slots__ = ("type", "subType", "filters")
    class FiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBTYPE_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    type: str
    subType: str
    filters: _containers.ScalarMap[str, str]
    def __init__(self, type: _Optional[str] = ..., subType: _Optional[str] = ..., filters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PickCacheResponse(_message.Message):
    __slots__ = ("caches",)
    CACHES_FIELD_NUMBER: _ClassVar[int]
    caches: _containers.RepeatedCompositeFieldContainer[Cache]
    def __init__(self, caches: _Optional[_Iterable[_Union[Cache, _Mapping]]] = ...) -> None: ...

class SaveCacheRequest(_message.Message):
    __slots__ = ("cache", "sourcePath")
    CACHE_FIELD_NUMBER: _ClassVar[int]
    SOURCEPATH_FIELD_NUMBER: _ClassVar[int]
    cache: Cache
    sourcePath: str
    def __init__(self, cache: _Optional[_Union[Cache, _Mapping]] = ..., sourcePath: _Optional[str] = ...) -> None: ...

class SaveCacheResponse(_message.Message):
    __slots__ = ("ok",)
    OK_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    def __init__(self, ok: _Optional[bool] = ...) -> None: ...

class ListCacheRequest(_message.Message):
    __slots__ = ("type", "subType", "lastCacheID", "limit")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBTYPE_FIELD_NUMBER: _ClassVar[int]
    LASTCACHEID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    type: str
    subType: str
    lastCacheID: str
    limit: int
    def __init__(self, type: _Optional[str] = ..., subType: _Optional[str] = ..., lastCacheID: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListCacheResponse(_message.Message):
    __slots__ = ("caches",)
    CACHES_FIELD_NUMBER: _ClassVar[int]
    caches: _containers.RepeatedCompositeFieldContainer[Cache]
    def __init__(self, caches: _Optional[_Iterable[_Union[Cache, _Mapping]]] = ...) -> None: ...

class DeleteCacheRequest(_message.Message):
    __slots__ = ("type", "subType", "ID")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBTYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    type: str
    subType: str
    ID: str
    def __init__(self, type: _Optional[str] = ..., subType: _Optional[str] = ..., ID: _Optional[str] = ...) -> None: ...

class DeleteCacheResponse(_message.Message):
    __slots__ = ("ok",)
    OK_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    def __init__(self, ok: _Optional[bool] = ...) -> None: ...

class LoadCacheRequest(_message.Message):
    __slots__ = ("type", "subType", "ID", "targetPath")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBTYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TARGETPATH_FIELD_NUMBER: _ClassVar[int]
    type: str
    subType: str
    ID: str
    targetPath: str
    def __init__(self, type: _Optional[str] = ..., subType: _Optional[str] = ..., ID: _Optional[str] = ..., targetPath: _Optional[str] = ...) -> None: ...

class LoadCacheResponse(_message.Message):
    __slots__ = ("ok",)
    OK_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    def __init__(self, ok: _Optional[bool] = ...) -> None: ...

class HealthzRequest(_message.Message):
    __slots__ = ("type",)
    TYPE_FIELD_NUMBER: _ClassVar[int]
    type: str
    def __init__(self, type: _Optional[str] = ...) -> None: ...

class HealthzResponse(_message.Message):
    __slots__ = ("ok",)
    OK_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    def __init__(self, ok: _Optional[bool] = ...) -> None: ...

class Enclave(_message.Message):
    __slots__ = ("fd", "nr", "layout")
    FD_FIELD_NUMBER: _ClassVar[int]
    NR_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    fd: int
    nr: int
    layout: _containers.RepeatedCompositeFieldContainer[Enclavelayout]
    def __init__(self, fd: _Optional[int] = ..., nr: _Optional[int] = ..., layout: _Optional[_Iterable[_Union[Enclavelayout, _Mapping]]] = ...) -> None: ...

class Enclavelayout(_message.Message):
    __slots__ = ("addr", "size", "prot")
    ADDR_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PROT_FIELD_NUMBER: _ClassVar[int]
    addr: int
    size: int
    prot: EnclavePerms
    def __init__(self, addr: _Optional[int] = ..., size: _Optional[int] = ..., prot: _Optional[_Union[EnclavePerms, _Mapping]] = ...) -> None: ...

class EnclavePerms(_message.Message):
    __slots__ = ("read", "write", "execute", "share", "private")
    READ_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    read: bool
    write: bool
    execute: bool
    share: bool
    private: bool
    def __init__(self, read: _Optional[bool] = ..., write: _Optional[bool] = ..., execute: _Optional[bool] = ..., share: _Optional[bool] = ..., private: _Optional[bool] = ...) -> None: ...
