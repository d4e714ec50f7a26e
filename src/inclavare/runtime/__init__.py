"""The container engine as a library: lifecycle (container.Runtime: create, start, run, exec, kill, delete,
state, pause, resume, update, events' stats and OOM watch, ps), the typed State and its store, hooks, and the
executor seam (launch.Executor: execve by default) that a caller hands in -- enclave/'s runelets for
enclave containers. Knows nothing of enclaves; prints nothing and never exits (errors are inclavare.errors
types, logging goes through the caller's ``log``).

May import: linux, formats.
"""
