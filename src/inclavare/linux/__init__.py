"""The thin Linux layer: syscalls (ctypes), mounts and pivot_root, capabilities, seccomp, cgroups v1 and v2,
devices, ptys and SCM_RIGHTS. No container policy: it does what runtime/ asks.

May import: formats.
"""
