"""verdictd's wire contracts as protobuf: the ocicrypt key provider service (keyprovider.proto) and upstream
verdictd's admin API, clientapi (clientapi.proto)."""
