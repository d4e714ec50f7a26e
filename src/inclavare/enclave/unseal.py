"""Inside the enclave: open the image's sealed layers with a key the owner's KBS releases only to this enclave.

The steps, in the enclave runtime after the enclave is measured (``pal_init``):

1. find ``/.inclavare/sealed/NNN/`` in the container's root (:mod:`inclavare.formats.sealed_layer`); none: done;
2. attest to the KBS named by the container (``ENCLAVE_KBS_URL``) with this enclave's own quote, and fetch the
   owner's private key resource (``ENCLAVE_KBS_KEY``, ``REPO/TYPE/TAG``; PEM, DER or JWK) -- the JWE answer is
   opened with the attestation session's key, in memory;
3. per layer, in image order: the descriptor's digest and size must match ``layer.enc``; the layer key is
   unwrapped from the descriptor's ``jwe`` annotation (ocicrypt's ``keys.jwe``, what ``skopeo copy
   --encryption-key jwe:`` writes); AES-256-CTR + HMAC-SHA256 decrypt into a staging file in the private tree,
   refused unless the HMAC and the plaintext digest check; then the tar is unpacked into the private tree
   (:mod:`.privatefs`) and the staging file removed.

Any failure refuses the whole container (the caller turns it into a ``pal_init`` error, so ``create`` fails) and
what was written lives only in the private tree, which disappears with the process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from inclavare.enclave.privatefs import PrivateFs, PrivateFsError, extract_tar
from inclavare.errors import InclavareError
from inclavare.formats import ocicrypt as oc
from inclavare.formats import ocicrypt_cipher as cipher
from inclavare.formats import ocicrypt_jwe as jwe
from inclavare.formats import sealed_layer as sl
from inclavare.formats.ocicrypt import OcicryptError

KBS_KEY_ENV = "ENCLAVE_KBS_KEY"
MAX_KEY = 64 << 10


class UnsealError(InclavareError):
    """A sealed layer could not be opened; the message names the layer and why."""


@dataclass
class Sealed:
    index: int
    directory: str


def preload() -> None:
    """Import, and run once on throwaway data, every code path unsealing takes: after pivot_root the runtime's
    own files are out of reach, and the libraries involved import parts of themselves lazily."""
    import encodings.idna  # noqa: F401 (TLS server names)
    import gzip  # noqa: F401 (tarfile's stream mode opens +gzip layers with it)
    import http.client  # noqa: F401
    import io
    import ssl  # noqa: F401
    import tarfile

    import cryptography.hazmat.backends.openssl.backend  # noqa: F401 (ECDSA signing: the sim QE's quote)
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: F401
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa  # noqa: F401

    from inclavare.enclave import kbs_client  # noqa: F401
    from inclavare.formats import kbs, kbs_jwe

    key = ec.generate_private_key(ec.SECP256R1())
    kbs.expected_report_data("warm", kbs_jwe.tee_pubkey(key), "")
    kbs_jwe.open(key, kbs_jwe.seal(kbs_jwe.tee_pubkey(key), b"warm"))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    spki = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        t.addfile(tarfile.TarInfo("warm"))
    ct, pub, priv = cipher.encrypt_bytes(buf.getvalue())
    wrapped = jwe.wrap(priv.encode(), [jwe.load_public_key(spki)])
    opened = oc.decode_private(jwe.unwrap(wrapped, [jwe.load_private_key(pem)]))
    out = io.BytesIO()
    cipher.decrypt_file(io.BytesIO(ct), out, pub, opened)
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r|*") as t:
        for _ in t:
            pass


def find_sealed(root: str = "/") -> list[Sealed]:
    """The sealed layers under ``root`` in image order (empty when the image has none)."""
    base = os.path.join(root, sl.SEALED_DIR)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise UnsealError(f"{base}: {e.strerror}") from None
    out = []
    for name in names:
        index = sl.entry_index(name)
        if index is None:
            raise UnsealError(f"{base}/{name[:80]}: not a sealed layer directory (NNN)")
        out.append(Sealed(index, os.path.join(base, name)))
    return sorted(out, key=lambda s: s.index)


def _read(path: str, limit: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise UnsealError(f"{path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnsealError(f"{path}: over {limit} bytes")
    return data


def _layer_key(desc: dict[str, Any], keys: list[Any], where: str) -> bytes:
    annotations = desc["annotations"]
    wrapped = annotations.get(oc.ANNOTATION_JWE)
    if wrapped is None:
        schemes = ", ".join(sorted(k[len(oc.ANNOTATION_KEYS_PREFIX):] for k in oc.wrapped_key_annotations(annotations)))
        raise UnsealError(f"{where}: its key is wrapped for {schemes}; the enclave opens jwe-wrapped keys")
    errors = []
    for blob in oc.split_wrapped(wrapped, f"{where} keys.jwe"):
        try:
            return jwe.unwrap(blob, keys, f"{where} jwe")
        except OcicryptError as e:
            errors.append(str(e))
    raise UnsealError(f"{where}: the key from the KBS does not open it ({errors[0] if errors else 'no recipient'})")


def unseal(tree: PrivateFs, sealed: list[Sealed], private_key: bytes, *, uid: int = 0, gid: int = 0) -> list[str]:
    """Decrypt and unpack ``sealed`` into ``tree`` with the owner's ``private_key``; returns the plaintext
    layers' digests. Raises UnsealError (nothing usable is left in ``tree`` then: the caller drops it)."""
    try:
        # it came through the attested session's JWE from the owner's KBS: no 70 ms RSA consistency check
        keys = [jwe.load_private_key(private_key, "the image key from the KBS", check_rsa=False)]
    except OcicryptError as e:
        raise UnsealError(str(e)) from None
    done = []
    for entry in sealed:
        where = f"sealed layer {entry.index:03d}"
        try:
            desc = sl.decode_descriptor(_read(os.path.join(entry.directory, sl.DESCRIPTOR_FILE), sl.MAX_DESCRIPTOR),
                                        f"{where} descriptor")
            pub = oc.decode_pubopts_annotation(desc["annotations"].get(oc.ANNOTATION_PUBOPTS), f"{where} pubopts")
            priv = oc.decode_private(_layer_key(desc, keys, where), f"{where} private options")
            staging = f".unseal-{entry.index:03d}"
            fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=tree.fd)
            try:
                with os.fdopen(fd, "w+b") as plain, open(os.path.join(entry.directory, sl.LAYER_FILE), "rb") as src:
                    got = cipher.decrypt_file(src, plain, pub, priv, compression=oc.compression(desc["mediaType"]),
                                              where=where)
                    if got.ciphertext_digest != desc["digest"] or got.size != desc["size"]:
                        raise UnsealError(f"{where}: layer.enc is not the blob its descriptor names")
                    plain.seek(0)
                    extract_tar(tree, plain, where=where, uid=uid, gid=gid)
            finally:
                os.unlink(staging, dir_fd=tree.fd)
        except (OcicryptError, PrivateFsError) as e:
            raise UnsealError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
        except OSError as e:
            raise UnsealError(f"{where}: {e.strerror or e}") from None
        done.append(got.digest)
    return done
