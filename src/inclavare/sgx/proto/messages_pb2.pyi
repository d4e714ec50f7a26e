from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Request(_message.Message):
    __slots__ = ("getLicTokenReq", "initQuoteExReq", "getQuoteSizeExReq", "getQuoteExReq", "selectAttKeyIDReq", "getSupportedAttKeyIDNumReq", "getSupportedAttKeyIDsReq")
    class GetLaunchTokenRequest(_message.Message):
        __slots__ = ("mr_enclave", "mr_signer", "se_attributes", "timeout")
        MR_ENCLAVE_FIELD_NUMBER: _ClassVar[int]
        MR_SIGNER_FIELD_NUMBER: _ClassVar[int]
        SE_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
        TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        mr_enclave: bytes
        mr_signer: bytes
        se_attributes: bytes
        timeout: int
        def __init__(self, mr_enclave: _Optional[bytes] = ..., mr_signer: _Optional[bytes] = ..., se_attributes: _Optional[bytes] = ..., timeout: _Optional[int] = ...) -> None: ...
    class InitQuoteExRequest(_message.Message):
        __slots__ = ("att_key_id", "b_pub_key_id", "buf_size", "timeout")
        ATT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
        B_PUB_KEY_ID_FIELD_NUMBER: _ClassVar[int]
        BUF_SIZE_FIELD_NUMBER: _ClassVar[int]
        TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        att_key_id: bytes
        b_pub_key_id: bool
        buf_size: int
        timeout: int
        def __init__(self, att_key_id: _Optional[bytes] = ..., b_pub_key_id: _Optional[bool] = ..., buf_size: _Optional[int] = ..., timeout: _Optional[int] = ...) -> None: ...
    class GetQuoteSizeExRequest(_message.Message):
        __slots__ = ("att_key_id", "timeout")
        ATT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
        TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        att_key_id: bytes
        timeout: int
        def __init__(self, att_key_id: _Optional[bytes] = ..., timeout: _Optional[int] = ...) -> None: ...
    class GetQuoteExRequest(_message.Message):
        __slots__ = ("report", "att_key_id", "qe_report_info", "buf_size", "timeout")
        REPORT_FIELD_NUMBER: _ClassVar[int]
        ATT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
        QE_REPORT_INFO_FIELD_NUMBER: _ClassVar[int]
        BUF_SIZE_FIELD_NUMBER: _ClassVar[int]
        TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        report: bytes
        att_key_id: bytes
        qe_report_info: bytes
        buf_size: int
        timeout: int
        def __init__(self, report: _Optional[bytes] = ..., att_key_id: _Optional[bytes] = ..., qe_report_info: _Optional[bytes] = ..., buf_size: _Optional[int] = ..., timeout: _Optional[int] = ...) -> None: ...
    class SelectAttKeyIDRequest(_message.Message):
        __slots__ = ("att_key_id_list", "timeout")
        ATT_KEY_ID_LIST_FIELD_NUMBER: _ClassVar[int]
        TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        att_key_id_list: bytes
        timeout: int
        def __init__(self, att_key_id_list: _Optional[bytes] = ..., timeout: _Optional[int] = ...) -> None: ...
    class GetSupportedAttKeyIDNumRequest(_message.Message):
        __slots__ = ("timeout",)
        TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        timeout: int
        def __init__(self, timeout: _Optional[int] = ...) -> None: ...
    class GetSupportedAttKeyIDsRequest(_message.Message):
        __slots__ = ("buf_size", "timeout")
        BUF_SIZE_FIELD_NUMBER: _ClassVar[int]
        TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        buf_size: int
        timeout: int
        def __init__(self, buf_size: _Optional[int] = ..., timeout: _Optional[int] = ...) -> None: ...
    GETLICTOKENREQ_FIELD_NUMBER: _ClassVar[int]
    INITQUOTEEXREQ_FIELD_NUMBER: _ClassVar[int]
    GETQUOTESIZEEXREQ_FIELD_NUMBER: _ClassVar[int]
    GETQUOTEEXREQ_FIELD_NUMBER: _ClassVar[int]
    SELECTATTKEYIDREQ_FIELD_NUMBER: _ClassVar[int]
    GETSUPPORTEDATTKEYIDNUMREQ_FIELD_NUMBER: _ClassVar[int]
    GETSUPPORTEDATTKEYIDSREQ_FIELD_NUMBER: _ClassVar[int]
    getLicTokenReq: Request.GetLaunchTokenRequest
    initQuoteExReq: Request.InitQuoteExRequest
    getQuoteSizeExReq: Request.GetQuoteSizeExRequest
    getQuoteExReq: Request.GetQuoteExRequest
    selectAttKeyIDReq: Request.SelectAttKeyIDRequest
    getSupportedAttKeyIDNumReq: Request.GetSupportedAttKeyIDNumRequest
    getSupportedAttKeyIDsReq: Request.GetSupportedAttKeyIDsRequest
    def __init__(self, getLicTokenReq: _Optional[_Union[Request.GetLaunchTokenRequest, _Mapping]] = ..., initQuoteExReq: _Optional[_Union[Request.InitQuoteExRequest, _Mapping]] = ..., getQuoteSizeExReq: _Optional[_Union[Request.GetQuoteSizeExRequest, _Mapping]] = ..., getQuoteExReq: _Optional[_Union[Request.GetQuoteExRequest, _Mapping]] = ..., selectAttKeyIDReq: _Optional[_Union[Request.SelectAttKeyIDRequest, _Mapping]] = ..., getSupportedAttKeyIDNumReq: _Optional[_Union[Request.GetSupportedAttKeyIDNumRequest, _Mapping]] = ..., getSupportedAttKeyIDsReq: _Optional[_Union[Request.GetSupportedAttKeyIDsRequest, _Mapping]] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("getLicTokenRes", "initQuoteExRes", "getQuoteSizeExRes", "getQuoteExRes", "selectAttKeyIDRes", "unsupportedRequestResponse", "getSupportedAttKeyIDNumRes", "getSupportedAttKeyIDsRes")
    class GetLaunchTokenResponse(_message.Message):
        __slots__ = ("errorCode", "token")
        ERRORCODE_FIELD_NUMBER: _ClassVar[int]
        TOKEN_FIELD_NUMBER: _ClassVar[int]
        errorCode: int
        token: bytes
        def __init__(self, errorCode: _Optional[int] = ..., token: _Optional[bytes] = ...) -> None: ...
    class InitQuoteExResponse(_message.Message):
        __slots__ = ("errorCode", "target_info", "pub_key_id_size", "pub_key_id")
        ERRORCODE_FIELD_NUMBER: _ClassVar[int]
        TARGET_INFO_FIELD_NUMBER: _ClassVar[int]
        PUB_KEY_ID_SIZE_FIELD_NUMBER: _ClassVar[int]
        PUB_KEY_ID_FIELD_NUMBER: _ClassVar[int]
        errorCode: int
        target_info: bytes
        pub_key_id_size: int
        pub_key_id: bytes
        def __init__(self, errorCode: _Optional[int] = ..., target_info: _Optional[bytes] = ..., pub_key_id_size: _Optional[int] = ..., pub_key_id: _Optional[bytes] = ...) -> None: ...
    class GetQuoteSizeExResponse(_message.Message):
        __slots__ = ("errorCode", "quote_size")
        ERRORCODE_FIELD_NUMBER: _ClassVar[int]
        QUOTE_SIZE_FIELD_NUMBER: _ClassVar[int]
        errorCode: int
        quote_size: int
        def __init__(self, errorCode: _Optional[int] = ..., quote_size: _Optional[int] = ...) -> None: ...
    class GetQuoteExResponse(_message.Message):
        __slots__ = ("errorCode", "quote", "qe_report_info")
        ERRORCODE_FIELD_NUMBER: _ClassVar[int]
        QUOTE_FIELD_NUMBER: _ClassVar[int]
        QE_REPORT_INFO_FIELD_NUMBER: _ClassVar[int]
        errorCode: int
        quote: bytes
        qe_report_info: bytes
        def __init__(self, errorCode: _Optional[int] = ..., quote: _Optional[bytes] = ..., qe_report_info: _Optional[bytes] = ...) -> None: ...
    class SelectAttKeyIDResponse(_message.Message):
        __slots__ = ("errorCode", "selected_att_key_id")
        ERRORCODE_FIELD_NUMBER: _ClassVar[int]
        SELECTED_ATT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
        errorCode: int
        selected_att_key_id: bytes
        def __init__(self, errorCode: _Optional[int] = ..., selected_att_key_id: _Optional[bytes] = ...) -> None: ...
    class UnsupportedRequestResponse(_message.Message):
        __slots__ = ("errorCode",)
        ERRORCODE_FIELD_NUMBER: _ClassVar[int]
        errorCode: int
        def __init__(self, errorCode: _Optional[int] = ...) -> None: ...
    class GetSupportedAttKeyIDNumResponse(_message.Message):
        __slots__ = ("errorCode", "att_key_id_num")
        ERRORCODE_FIELD_NUMBER: _ClassVar[int]
        ATT_KEY_ID_NUM_FIELD_NUMBER: _ClassVar[int]
        errorCode: int
        att_key_id_num: int
        def __init__(self, errorCode: _Optional[int] = ..., att_key_id_num: _Optional[int] = ...) -> None: ...
    class GetSupportedAttKeyIDsResponse(_message.Message):
        __slots__ = ("errorCode", "att_key_ids")
        ERRORCODE_FIELD_NUMBER: _ClassVar[int]
        ATT_KEY_IDS_FIELD_NUMBER: _ClassVar[int]
        errorCode: int
        att_key_ids: bytes
        def __init__(self, errorCode: _Optional[int] = ..., att_key_ids: _Optional[bytes] = ...) -> None: ...
    GETLICTOKENRES_FIELD_NUMBER: _ClassVar[int]
    INITQUOTEEXRES_FIELD_NUMBER: _ClassVar[int]
    GETQUOTESIZEEXRES_FIELD_NUMBER: _ClassVar[int]
    GETQUOTEEXRES_FIELD_NUMBER: _ClassVar[int]
    SELECTATTKEYIDRES_FIELD_NUMBER: _ClassVar[int]
    UNSUPPORTEDREQUESTRESPONSE_FIELD_NUMBER: _ClassVar[int]
    GETSUPPORTEDATTKEYIDNUMRES_FIELD_NUMBER: _ClassVar[int]
    GETSUPPORTEDATTKEYIDSRES_FIELD_NUMBER: _ClassVar[int]
    getLicTokenRes: Response.GetLaunchTokenResponse
    initQuoteExRes: Response.InitQuoteExResponse
    getQuoteSizeExRes: Response.GetQuoteSizeExResponse
    getQuoteExRes: Response.GetQuoteExResponse
    selectAttKeyIDRes: Response.SelectAttKeyIDResponse
    unsupportedRequestResponse: Response.UnsupportedRequestResponse
    getSupportedAttKeyIDNumRes: Response.GetSupportedAttKeyIDNumResponse
    getSupportedAttKeyIDsRes: Response.GetSupportedAttKeyIDsResponse
    def __init__(self, getLicTokenRes: _Optional[_Union[Response.GetLaunchTokenResponse, _Mapping]] = ..., initQuoteExRes: _Optional[_Union[Response.InitQuoteExResponse, _Mapping]] = ..., getQuoteSizeExRes: _Optional[_Union[Response.GetQuoteSizeExResponse, _Mapping]] = ..., getQuoteExRes: _Optional[_Union[Response.GetQuoteExResponse, _Mapping]] = ..., selectAttKeyIDRes: _Optional[_Union[Response.SelectAttKeyIDResponse, _Mapping]] = ..., unsupportedRequestResponse: _Optional[_Union[Response.UnsupportedRequestResponse, _Mapping]] = ..., getSupportedAttKeyIDNumRes: _Optional[_Union[Response.GetSupportedAttKeyIDNumResponse, _Mapping]] = ..., getSupportedAttKeyIDsRes: _Optional[_Union[Response.GetSupportedAttKeyIDsResponse, _Mapping]] = ...) -> None: ...
