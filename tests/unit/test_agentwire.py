"""The agent message codec against protoc's code for proto/agent.proto (the protobuf runtime is the oracle)."""

from __future__ import annotations

import random

import pytest

from inclavare.enclave import agentwire as w

pb = pytest.importorskip("inclavare.enclave.proto.agent_pb2", reason="protobuf is not installed")

WORDS = ["", "a", "two words", "ünï", "x" * 300, "=", "PATH=/bin:/usr/bin"]


def random_request(rng: random.Random):  # type: ignore[no-untyped-def]
    ours, theirs = w.AgentServiceRequest(), pb.AgentServiceRequest()
    which = rng.choice(["exec", "kill", "attest", "exec+kill"])
    if "exec" in which:
        args = [rng.choice(WORDS) for _ in range(rng.randrange(0, 5))]
        env = [rng.choice(WORDS) for _ in range(rng.randrange(0, 4))]
        for m in (ours, theirs):
            m.exec.argv = " ".join(args)
            m.exec.envp = " ".join(env)
            m.exec.args.extend(args)
            m.exec.env.extend(env)
    if "kill" in which:
        sig = rng.choice([0, 1, 15, 64, -1, 2**31 - 1, -(2**31)])
        for m in (ours, theirs):
            m.kill.sig = sig
    if which == "attest":
        ti = bytes(rng.randrange(256) for _ in range(rng.choice([0, 512])))
        is_ra = rng.random() < 0.5
        for m in (ours, theirs):
            m.attest.isRA = is_ra
            m.attest.quoteType = rng.choice(["", "ecdsa"]) if m is ours else ours.attest.quoteType
            m.attest.targetInfo = ti
    return ours, theirs


def random_response(rng: random.Random):  # type: ignore[no-untyped-def]
    ours, theirs = w.AgentServiceResponse(), pb.AgentServiceResponse()
    code = rng.choice([0, 1, 143, -5])
    err = rng.choice(WORDS)
    if rng.random() < 0.5:
        for m in (ours, theirs):
            m.exec.exitCode = code
            m.exec.error = err
    else:
        rep = bytes(rng.randrange(256) for _ in range(rng.choice([0, 432])))
        for m in (ours, theirs):
            m.attest.exitCode = code
            m.attest.error = err
            m.attest.localReport = rep
    return ours, theirs


@pytest.mark.parametrize("seed", range(200))
def test_encoding_matches_protobuf(seed: int) -> None:
    rng = random.Random(seed)
    for ours, theirs in (random_request(rng), random_response(rng)):
        data = theirs.SerializeToString()
        assert ours.SerializeToString() == data
        back = type(ours)()
        back.ParseFromString(data)
        assert back.SerializeToString() == data
        for name, _kind in type(ours).FIELDS.values():
            assert back.HasField(name) == theirs.HasField(name)


def test_decoded_values_and_unknown_fields() -> None:
    m = pb.AgentServiceRequest()
    m.exec.argv = "a b"
    m.exec.args.extend(["a b"])
    data = m.SerializeToString() + b"\x28\x07" + b"\x32\x03xyz" + b"\x3d\x00\x00\x00\x00"  # unknown 5, 6, 7
    ours = w.AgentServiceRequest()
    ours.ParseFromString(data)
    assert ours.exec.argv == "a b" and list(ours.exec.args) == ["a b"]
    assert not ours.HasField("kill") and not ours.HasField("attest")
    k = pb.AgentServiceRequest()
    k.kill.sig = -3
    ours.ParseFromString(k.SerializeToString())
    assert ours.kill.sig == -3


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x08", b"\x0a\x02\xff\xfe", b"\x0b", b"\x80" * 11])
def test_malformed_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(w.DecodeError):
        w.AgentServiceRequest().ParseFromString(data)
