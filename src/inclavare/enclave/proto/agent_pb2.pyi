from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentServiceRequest(_message.Message):
    __slots__ = ("exec", "kill", "attest")
    class Execute(_message.Message):
        __slots__ = ("argv", "envp", "args", "env")
        ARGV_FIELD_NUMBER: _ClassVar[int]
        ENVP_FIELD_NUMBER: _ClassVar[int]
        ARGS_FIELD_NUMBER: _ClassVar[int]
        ENV_FIELD_NUMBER: _ClassVar[int]
        argv: str
        envp: str
        args: _containers.RepeatedScalarFieldContainer[str]
        env: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, argv: _Optional[str] = ..., envp: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Iterable[str]] = ...) -> None: ...
    class Kill(_message.Message):
        __slots__ = ("sig",)
        SIG_FIELD_NUMBER: _ClassVar[int]
        sig: int
        def __init__(self, sig: _Optional[int] = ...) -> None: ...
    class Attest(_message.Message):
        __slots__ = ("isRA", "quoteType", "spid", "subscriptionKey", "targetInfo")
        ISRA_FIELD_NUMBER: _ClassVar[int]
        QUOTETYPE_FIELD_NUMBER: _ClassVar[int]
        SPID_FIELD_NUMBER: _ClassVar[int]
        SUBSCRIPTIONKEY_FIELD_NUMBER: _ClassVar[int]
        TARGETINFO_FIELD_NUMBER: _ClassVar[int]
        isRA: bool
        quoteType: str
        spid: str
        subscriptionKey: str
        targetInfo: bytes
        def __init__(self, isRA: _Optional[bool] = ..., quoteType: _Optional[str] = ..., spid: _Optional[str] = ..., subscriptionKey: _Optional[str] = ..., targetInfo: _Optional[bytes] = ...) -> None: ...
    EXEC_FIELD_NUMBER: _ClassVar[int]
    KILL_FIELD_NUMBER: _ClassVar[int]
    ATTEST_FIELD_NUMBER: _ClassVar[int]
    exec: AgentServiceRequest.Execute
    kill: AgentServiceRequest.Kill
    attest: AgentServiceRequest.Attest
    def __init__(self, exec: _Optional[_Union[AgentServiceRequest.Execute, _Mapping]] = ..., kill: _Optional[_Union[AgentServiceRequest.Kill, _Mapping]] = ..., attest: _Optional[_Union[AgentServiceRequest.Attest, _Mapping]] = ...) -> None: ...

class AgentServiceResponse(_message.Message):
    __slots__ = ("exec", "attest")
    class Execute(_message.Message):
        __slots__ = ("exitCode", "error")
        EXITCODE_FIELD_NUMBER: _ClassVar[int]
        ERROR_FIELD_NUMBER: _ClassVar[int]
        exitCode: int
        error: str
        def __init__(self, exitCode: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...
    class Attest(_message.Message):
        __slots__ = ("exitCode", "error", "localReport")
        EXITCODE_FIELD_NUMBER: _ClassVar[int]
        ERROR_FIELD_NUMBER: _ClassVar[int]
        LOCALREPORT_FIELD_NUMBER: _ClassVar[int]
        exitCode: int
        error: str
        localReport: bytes
        def __init__(self, exitCode: _Optional[int] = ..., error: _Optional[str] = ..., localReport: _Optional[bytes] = ...) -> None: ...
    EXEC_FIELD_NUMBER: _ClassVar[int]
    ATTEST_FIELD_NUMBER: _ClassVar[int]
    exec: AgentServiceResponse.Execute
    attest: AgentServiceResponse.Attest
    def __init__(self, exec: _Optional[_Union[AgentServiceResponse.Execute, _Mapping]] = ..., attest: _Optional[_Union[AgentServiceResponse.Attest, _Mapping]] = ...) -> None: ...
