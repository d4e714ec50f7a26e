"""One verification core: a Verifier per TEE (SGX and TDX DCAP quotes, SEV-SNP reports, sim quotes), collateral
(Intel PCS shapes, bundles, trust folders), TCB status, flat claims for policy.

May import: formats.
"""
