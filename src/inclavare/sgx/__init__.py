"""SGX operations above the pure formats: SIGSTRUCT signing and verification."""
