from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CreateKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateKeyResponse(_message.Message):
    __slots__ = ("status", "uuid")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    uuid: bytes
    def __init__(self, status: _Optional[bytes] = ..., uuid: _Optional[bytes] = ...) -> None: ...

class GetKeyRequest(_message.Message):
    __slots__ = ("uuid",)
    UUID_FIELD_NUMBER: _ClassVar[int]
    uuid: bytes
    def __init__(self, uuid: _Optional[bytes] = ...) -> None: ...

class GetKeyResponse(_message.Message):
    __slots__ = ("status", "key")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    key: bytes
    def __init__(self, status: _Optional[bytes] = ..., key: _Optional[bytes] = ...) -> None: ...

class DeleteKeyRequest(_message.Message):
    __slots__ = ("uuid",)
    UUID_FIELD_NUMBER: _ClassVar[int]
    uuid: bytes
    def __init__(self, uuid: _Optional[bytes] = ...) -> None: ...

class DeleteKeyResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    def __init__(self, status: _Optional[bytes] = ...) -> None: ...

class SetOpaPolicyRequest(_message.Message):
    __slots__ = ("name", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: bytes
    content: bytes
    def __init__(self, name: _Optional[bytes] = ..., content: _Optional[bytes] = ...) -> None: ...

class SetOpaPolicyResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    def __init__(self, status: _Optional[bytes] = ...) -> None: ...

class SetOpaReferenceRequest(_message.Message):
    __slots__ = ("name", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: bytes
    content: bytes
    def __init__(self, name: _Optional[bytes] = ..., content: _Optional[bytes] = ...) -> None: ...

class SetOpaReferenceResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    def __init__(self, status: _Optional[bytes] = ...) -> None: ...

class ExportOpaPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: bytes
    def __init__(self, name: _Optional[bytes] = ...) -> None: ...

class ExportOpaPolicyResponse(_message.Message):
    __slots__ = ("status", "content")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    content: bytes
    def __init__(self, status: _Optional[bytes] = ..., content: _Optional[bytes] = ...) -> None: ...

class ExportOpaReferenceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: bytes
    def __init__(self, name: _Optional[bytes] = ...) -> None: ...

class ExportOpaReferenceResponse(_message.Message):
    __slots__ = ("status", "content")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    content: bytes
    def __init__(self, status: _Optional[bytes] = ..., content: _Optional[bytes] = ...) -> None: ...

class TestOpaRequest(_message.Message):
    __slots__ = ("policyname", "policycontent", "policylocal", "referencename", "referencecontent", "referencelocal", "input")
    POLICYNAME_FIELD_NUMBER: _ClassVar[int]
    POLICYCONTENT_FIELD_NUMBER: _ClassVar[int]
    POLICYLOCAL_FIELD_NUMBER: _ClassVar[int]
    REFERENCENAME_FIELD_NUMBER: _ClassVar[int]
    REFERENCECONTENT_FIELD_NUMBER: _ClassVar[int]
    REFERENCELOCAL_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    policyname: bytes
    policycontent: bytes
    policylocal: bool
    referencename: bytes
    referencecontent: bytes
    referencelocal: bool
    input: bytes
    def __init__(self, policyname: _Optional[bytes] = ..., policycontent: _Optional[bytes] = ..., policylocal: _Optional[bool] = ..., referencename: _Optional[bytes] = ..., referencecontent: _Optional[bytes] = ..., referencelocal: _Optional[bool] = ..., input: _Optional[bytes] = ...) -> None: ...

class TestOpaResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    def __init__(self, status: _Optional[bytes] = ...) -> None: ...

class ListGpgKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGpgKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: bytes
    def __init__(self, keys: _Optional[bytes] = ...) -> None: ...

class ImportGpgKeyRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class ImportGpgKeyResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    def __init__(self, status: _Optional[bytes] = ...) -> None: ...

class DeleteGpgKeyRequest(_message.Message):
    __slots__ = ("keyid",)
    KEYID_FIELD_NUMBER: _ClassVar[int]
    keyid: bytes
    def __init__(self, keyid: _Optional[bytes] = ...) -> None: ...

class DeleteGpgKeyResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    def __init__(self, status: _Optional[bytes] = ...) -> None: ...

class ExportGpgKeyringRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportGpgKeyringResponse(_message.Message):
    __slots__ = ("status", "content")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    content: bytes
    def __init__(self, status: _Optional[bytes] = ..., content: _Optional[bytes] = ...) -> None: ...

class ExportImageSigstoreRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportImageSigstoreResponse(_message.Message):
    __slots__ = ("status", "content")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    content: bytes
    def __init__(self, status: _Optional[bytes] = ..., content: _Optional[bytes] = ...) -> None: ...

class SetImageSigstoreRequest(_message.Message):
    __slots__ = ("content",)
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    def __init__(self, content: _Optional[bytes] = ...) -> None: ...

class SetImageSigstoreResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    def __init__(self, status: _Optional[bytes] = ...) -> None: ...

class ExportImagePolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportImagePolicyResponse(_message.Message):
    __slots__ = ("status", "content")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    content: bytes
    def __init__(self, status: _Optional[bytes] = ..., content: _Optional[bytes] = ...) -> None: ...

class SetImagePolicyRequest(_message.Message):
    __slots__ = ("content",)
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    def __init__(self, content: _Optional[bytes] = ...) -> None: ...

class SetImagePolicyResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: bytes
    def __init__(self, status: _Optional[bytes] = ...) -> None: ...
