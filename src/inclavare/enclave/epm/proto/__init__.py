"""epm's wire contract: upstream Inclavare's EnclavePoolManager gRPC API (epm.proto, package v1alpha1)."""
