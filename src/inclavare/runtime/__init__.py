"""The container engine as a library: lifecycle state machine, create/start/exec/kill/delete, hooks, the state
store, and the executor seam (execve by default) that enclave/ plugs into. Knows nothing of enclaves.

May import: linux, formats.
"""
