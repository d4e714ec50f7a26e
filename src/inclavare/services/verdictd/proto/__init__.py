"""verdictd's wire contracts as protobuf: the ocicrypt key provider service (keyprovider.proto)."""
