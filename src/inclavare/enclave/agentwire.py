"""The agent service's protobuf messages, generated from proto/agent.proto, under the names rune uses
(``AgentServiceRequest``, ``AgentServiceResponse`` and their nested messages).

Nothing imports this module at the top level: the runelets load it through
:func:`inclavare.enclave.agent.load_codec` in their ``preload``, on the host before pivot_root or setns into
the container (where the protobuf runtime is not reachable), in the forked child, so the `rune create`
process itself never pays for it. After that import, building, serializing and parsing messages loads
nothing more (a unit test checks it). Unknown fields are kept and ignored, as protobuf does; malformed bytes
raise :class:`DecodeError` (protobuf's), whose message is one line.

How the classes are made: protobuf's public path (the generated ``agent_pb2``, through ``descriptor_pool``
and ``internal.builder``) imports ~40 ms of Python modules (text_format, python_message, descriptor_database,
typing, ...) that the upb runtime behind it does not use, and that import lies on `rune create`'s critical
path. So on a upb-backed protobuf the classes are built the way protobuf's own ``pyext/cpp_message`` does,
with upb's ``MessageMeta`` on the descriptor protoc generated (``proto/agent_desc.py``, the bytes
``agent_pb2`` registers), in a pool of their own; about half the cost (upb's first class still loads
``well_known_types``). Encoding and decoding are upb's either way -- no codec of ours. Where upb is not the
backend, or its module does not offer what is used here, the generated ``agent_pb2`` is used.
:data:`BUILT_ON_UPB` says which (a unit test requires the upb path on the locked protobuf).
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["AgentServiceRequest", "AgentServiceResponse", "Attest", "AttestResult", "BUILT_ON_UPB", "DecodeError",
           "Execute", "ExecuteResult", "Kill"]


def _on_upb() -> tuple[Any, Any] | None:
    """(request class, response class) built straight on upb, or None when that is not possible here."""
    try:
        from google._upb import _message as upb  # the C module behind protobuf's public API (upb backend)
        from google.protobuf import message
        from google.protobuf.internal import api_implementation
    except ImportError:
        return None
    if api_implementation.Type() != "upb":
        return None

    from inclavare.enclave.proto.agent_desc import SERIALIZED

    def build(desc: Any, outer: str = "") -> Any:
        # nested types first: upb finds a sub-message's class by its descriptor when a field is read
        qualname = outer + desc.name
        ns: dict[str, Any] = {"DESCRIPTOR": desc, "__module__": __name__, "__qualname__": qualname}
        for nested in desc.nested_types:
            ns[nested.name] = build(nested, qualname + ".")
        return upb.MessageMeta(desc.name, (message.Message,), ns)

    try:
        file = upb.DescriptorPool().AddSerializedFile(SERIALIZED)
        return (build(file.message_types_by_name["AgentServiceRequest"]),
                build(file.message_types_by_name["AgentServiceResponse"]))
    except (AttributeError, TypeError, KeyError):  # a upb module that differs from the one this was written for
        return None


_built = _on_upb()
BUILT_ON_UPB = _built is not None
"""True when the classes were built straight on upb, False when they are the generated module's."""

if _built is not None:
    AgentServiceRequest, AgentServiceResponse = _built
else:
    from inclavare.enclave.proto import agent_pb2

    AgentServiceRequest = agent_pb2.AgentServiceRequest
    AgentServiceResponse = agent_pb2.AgentServiceResponse
del _built

Execute = AgentServiceRequest.Execute
Kill = AgentServiceRequest.Kill
Attest = AgentServiceRequest.Attest
ExecuteResult = AgentServiceResponse.Execute
AttestResult = AgentServiceResponse.Attest
