"""The Kubernetes path for tests and benchmarks: containerd's CRI plugin driven over the CRI gRPC API.

``api.proto`` is the project's own subset of cri-api's ``runtime.v1`` contract; ``api_pb2`` and
``api_pb2_grpc`` are generated from it (the command is at the top of ``api.proto``). Import the client from
:mod:`inclavare.testing.cri.client` (it loads grpc and the generated modules).
"""
