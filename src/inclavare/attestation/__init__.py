"""One verification core: a Verifier per TEE (SGX and TDX DCAP quotes, SEV-SNP reports, sim quotes), collateral
(Intel PCS shapes, bundles, trust folders), TCB status, flat claims for policy.

Layout (one module per TEE on one shared Intel PCK/collateral core, as Trustee's deps/verifier has a folder per
TEE; each module owns one responsibility and none depends on a module above it in this list):

* ``api.py``: Options, Result, the error types; ``evidence.py``: which verifier a piece of evidence goes to;
* ``certs.py``: X.509 certificates, CRLs and ECDSA-P256 signatures, memoised by their bytes;
* ``pck.py``: Intel's pinned SGX root, the PCK chain and its SGX extension;
* ``tcbinfo.py``: TCB info and QE identity documents parsed from their signed bytes;
* ``collateral/``: where collateral comes from (files, bundle, PCS/PCCS with a cache), all as DcapCollateral;
* ``documents.py``: the collateral documents checked against a PCK chain (signatures, CRLs, windows);
* ``sgx.py`` / ``tdx.py``: what each DCAP TEE adds (flat claims; TDX module identity);
* ``tcb.py``: TCB status as Intel's QVL computes it, from the documents and one quote;
* ``dcap.py``: the DCAP quote verification shared by SGX and TDX, and their verifiers;
* ``snp.py``: AMD SEV-SNP; ``ccel.py``: the TDX event log; ``trust.py``: trust folders.

May import: formats.
"""
