"""The SGX device plugin (``inclavare-sgx-device-plugin``, issue 18): makes SGX EPC and SGX device access
schedulable Kubernetes resources through the kubelet device plugin API v1beta1.

* proto/: the v1beta1 API (upstream's package, services and field numbers), generated modules committed.
* platform.py: EPC size (sysfs, then CPUID leaf 0x12), SGX device nodes, the NFD feature line for
  ``sgx.intel.com/epc``.
* resources.py: the served resources (``alibabacloud.com/sgx_epc_MiB``, ``sgx.intel.com/enclave``,
  ``sgx.intel.com/provision``), sim mode, health and Allocate's answer.
* server.py: one gRPC server per resource, registration with kubelet and re-registration after a kubelet
  restart; cli/sgx_device_plugin.py runs it.

Done: all of the above, tested against a fake kubelet (inclavare.testing.fake_kubelet) with the real program.
Left: ``sgx.intel.com/epc`` (bytes) is only reported (an NFD feature file), not patched into the node's status
(that needs API-server credentials; Intel's epc-register helper does it); no NUMA topology in device entries;
health is the presence of the device nodes only (no EPC pressure or driver error reporting); not run on a real
SGX host or against a real kubelet (none here).

May import: what services may (it uses nothing below it but the project's base modules).
"""
