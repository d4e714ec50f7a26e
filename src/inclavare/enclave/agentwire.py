"""The agent service's protobuf messages: those protoc generates from proto/agent.proto, under the names rune
uses (``AgentServiceRequest``, ``AgentServiceResponse`` and their nested messages).

The generated module is imported with this one. Nothing imports this module at the top level: the
runelets load it through :func:`inclavare.enclave.agent.load_codec` in their ``preload``, on the host
before pivot_root or setns into the container (where the protobuf runtime is not reachable), so the
`rune create` process itself never pays for the protobuf runtime. After that import, building, serializing
and parsing messages loads nothing more (a unit test checks it). Unknown fields are kept and ignored, as
protobuf does; malformed bytes raise :class:`DecodeError` (protobuf's), whose message is one line.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from inclavare.enclave.proto import agent_pb2

__all__ = ["AgentServiceRequest", "AgentServiceResponse", "Attest", "AttestResult", "DecodeError", "Execute",
           "ExecuteResult", "Kill"]

AgentServiceRequest = agent_pb2.AgentServiceRequest
AgentServiceResponse = agent_pb2.AgentServiceResponse
Execute = AgentServiceRequest.Execute
Kill = AgentServiceRequest.Kill
Attest = AgentServiceRequest.Attest
ExecuteResult = AgentServiceResponse.Execute
AttestResult = AgentServiceResponse.Attest
