"""Intel DCAP collateral, as the verifiers consume it (:class:`DcapCollateral`), and where it comes from.

One module per concern, all producing the one type:

* :mod:`.model`: :class:`DcapCollateral`, the documents exactly as served;
* :mod:`.jsonbytes`: the exact bytes of a JSON member (what Intel signs), never re-serialised;
* :mod:`.encoding`: certificates and CRLs as PEM, URL-encoded PEM, DER or hex;
* :mod:`.signed`: PCS-shaped signed documents (``{"tcbInfo": ..., "signature": ...}``) and their update times;
* :mod:`.pool`: issuer chains picked from extra certificates when a source carries none;
* :mod:`.files`: files in PCS shapes, raw documents, and the bundle JSON (both ways);
* :mod:`.pcs`: Intel PCS or a PCCS over HTTP(S), with an on-disk cache.

The names below are the package's public API (many importers use them), re-exported from those modules.
Checking the collateral against a quote is not done here: see :mod:`inclavare.attestation.documents`.
"""

from inclavare.attestation.collateral.encoding import der_chain_to_pem, load_crl, parse_certificate_chain
from inclavare.attestation.collateral.files import BUNDLE_KEYS, from_bundle, from_documents, from_files, to_bundle
from inclavare.attestation.collateral.jsonbytes import raw_json_value
from inclavare.attestation.collateral.model import DcapCollateral
from inclavare.attestation.collateral.pcs import PcsClient
from inclavare.attestation.collateral.signed import SignedDocument, parse_signed_document

__all__ = [
    "BUNDLE_KEYS",
    "DcapCollateral",
    "PcsClient",
    "SignedDocument",
    "der_chain_to_pem",
    "from_bundle",
    "from_documents",
    "from_files",
    "load_crl",
    "parse_certificate_chain",
    "parse_signed_document",
    "raw_json_value",
    "to_bundle",
]
