"""The AESM messages generated from ``messages.proto`` (the protoc command is at the top of that file)."""
