"""Encrypt and decrypt the layers of the images in an OCI image layout (``oci-layout``, ``index.json``,
``blobs/<alg>/<hex>``), as ``skopeo copy --encryption-key/--decryption-key oci:SRC oci:DST`` does.

Encryption turns each chosen layer descriptor into its ``+encrypted`` form: a new blob (the ciphertext, the same
size as the plaintext), its digest and size, ocicrypt's annotations (``pubopts`` and one ``keys.<scheme>`` per
wrapper: ``jwe`` for all JWE recipients, ``provider.<name>`` per key provider), the layer's other annotations and
fields kept. Layers not chosen, and layers already encrypted, are left as they are. The config is not changed:
its ``diff_ids`` name the uncompressed plaintext layers, which is what a runtime checks after decrypting. Every
changed manifest is written again (members in their order, compact), and ``index.json`` points at it.

Decryption reverses it for every ``+encrypted`` layer (or the chosen ones): the wrapped key is opened with the
keys given (JWE private keys, key providers), the layer decrypted and verified (HMAC, then digest: see
:mod:`.cipher`), and the plain descriptor written (media type without ``+encrypted``, new digest and size,
``org.opencontainers.image.enc.*`` annotations removed).

Nothing is half-written: every new blob is staged in a private directory inside the destination, decrypted
plaintext included; only when every layer of every chosen image has been processed and verified are the blobs
moved into ``blobs/`` and ``index.json`` replaced (atomically). A refusal removes the staging directory. The
destination is the source itself (in place; old blobs are kept, as an OCI layout keeps unreferenced blobs) or a
directory that does not exist yet (the whole layout is built beside it and renamed into place).

Every blob read is checked against its descriptor's digest and size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from inclavare.formats import ocicrypt as oc
from inclavare.formats import ocicrypt_cipher as cipher
from inclavare.formats import ocicrypt_jwe as jwe
from inclavare.formats.ocicrypt import OcicryptError

if TYPE_CHECKING:
    from inclavare.services.imagecrypt.provider import KeyProviderClient

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"
MAX_DOCUMENT = 4 << 20
MAX_DEPTH = 4


@dataclass
class EncryptConfig:
    """Who can decrypt: JWE recipients' public keys (all in one ``keys.jwe`` annotation) and key providers, each
    with its values (``provider:NAME:VALUE``)."""

    jwe_recipients: list[jwe.PublicKey] = field(default_factory=list)
    providers: list[tuple[KeyProviderClient, list[bytes]]] = field(default_factory=list)

    def empty(self) -> bool:
        return not self.jwe_recipients and not self.providers


@dataclass
class DecryptConfig:
    """What may open a layer key: JWE private keys, and key providers (by name) with their values."""

    jwe_keys: list[jwe.PrivateKey] = field(default_factory=list)
    providers: list[tuple[KeyProviderClient, list[bytes]]] = field(default_factory=list)


@dataclass
class LayerResult:
    """What happened to one layer: ``action`` is ``encrypted``, ``decrypted`` or ``kept`` (with ``why``)."""

    manifest: str
    index: int
    action: str
    media_type: str
    digest: str
    new_digest: str = ""
    why: str = ""
    wrappers: list[str] = field(default_factory=list)
    diff_id: str = ""  # the new layer's uncompressed digest, when it differs from the old one's (sealing)

    def as_dict(self) -> dict[str, Any]:
        d = {"manifest": self.manifest, "layer": self.index, "action": self.action, "mediaType": self.media_type,
             "digest": self.digest}
        if self.new_digest:
            d["newDigest"] = self.new_digest
        if self.why:
            d["why"] = self.why
        if self.wrappers:
            d["wrappers"] = self.wrappers
        return d


def _blob_path(root: str, digest: str, where: str) -> str:
    oc.check_digest(digest, where)
    alg, hexpart = digest.split(":", 1)
    return os.path.join(root, "blobs", alg, hexpart)


class _Layout:
    """The source layout being read and the staging area new blobs go to."""

    def __init__(self, src: str, stage: str) -> None:
        self.src = src
        self.stage = stage
        self.new: dict[str, tuple[str, int]] = {}  # digest -> (staged path, mode)
        self.keep: set[str] = set()  # source blobs the result references

    # -- reading ---------------------------------------------------------------------------------------
    def open_blob(self, desc: dict[str, Any], where: str) -> IO[bytes]:
        path = _blob_path(self.src, desc.get("digest", ""), f"{where}.digest")
        try:
            return open(path, "rb")
        except OSError as e:
            raise OcicryptError(f"{where}: blob {desc['digest']}: {e.strerror}") from None

    def read_document(self, desc: dict[str, Any], where: str) -> dict[str, Any]:
        size = desc.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_DOCUMENT:
            raise OcicryptError(f"{where}.size: {str(size)[:20]} is not a size up to {MAX_DOCUMENT}")
        with self.open_blob(desc, where) as f:
            data = f.read(MAX_DOCUMENT + 1)
        self._verify(data, desc, where)
        return oc.parse_json_object(data, where, MAX_DOCUMENT)

    @staticmethod
    def _verify(data: bytes, desc: dict[str, Any], where: str) -> None:
        alg, hexpart = str(desc["digest"]).split(":", 1)
        if len(data) != desc.get("size") or hashlib.new(alg, data).hexdigest() != hexpart:
            raise OcicryptError(f"{where}: blob {desc['digest']} does not match its descriptor's digest and size")

    # -- writing ---------------------------------------------------------------------------------------
    def staged_file(self) -> tuple[str, IO[bytes]]:
        fd, path = tempfile.mkstemp(dir=self.stage, prefix="blob-")
        return path, os.fdopen(fd, "w+b")

    def add_staged(self, path: str, digest: str, mode: int) -> None:
        self.new[digest] = (path, mode)

    def put_document(self, doc: dict[str, Any]) -> tuple[str, int]:
        data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest not in self.new:
            path, f = self.staged_file()
            with f:
                f.write(data)
            self.add_staged(path, digest, 0o644)
        return digest, len(data)


def _layer_indexes(chosen: Sequence[int] | None, count: int, where: str) -> set[int]:
    if chosen is None:
        return set(range(count))
    out = set()
    for i in chosen:
        if not -count <= i < count:
            raise OcicryptError(f"{where}: layer {i} does not exist (the image has {count} layers; give 0..{count - 1}"
                                f" or -1..-{count})")
        out.add(i % count)
    return out


def _descriptor(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OcicryptError(f"{where}: expected a descriptor object")
    media = value.get("mediaType")
    if not isinstance(media, str):
        raise OcicryptError(f"{where}.mediaType: missing")
    oc.check_digest(value.get("digest"), f"{where}.digest")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise OcicryptError(f"{where}.size: not a size")
    ann = value.get("annotations", {})
    if not isinstance(ann, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ann.items()):
        raise OcicryptError(f"{where}.annotations: expected an object of strings")
    return value


LayerFn = Callable[[_Layout, dict[str, Any], str, str, int], "tuple[dict[str, Any] | None, LayerResult]"]


def _walk(lay: _Layout, desc: dict[str, Any], where: str, fn: LayerFn, chosen: Sequence[int] | None,
          results: list[LayerResult], depth: int = 0) -> dict[str, Any]:
    """The descriptor for ``desc`` after its layers were transformed by ``fn`` (the same one if nothing changed)."""
    media = desc["mediaType"]
    if depth > MAX_DEPTH:
        raise OcicryptError(f"{where}: image indexes nested deeper than {MAX_DEPTH}")
    if media in (MEDIA_INDEX, MEDIA_DOCKER_LIST):
        doc = lay.read_document(desc, where)
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise OcicryptError(f"{where}: an image index without manifests")
        new_list = [_walk(lay, _descriptor(m, f"{where}.manifests[{i}]"), f"{where}.manifests[{i}]", fn, chosen,
                          results, depth + 1) for i, m in enumerate(manifests)]
        if new_list == manifests:
            lay.keep.add(desc["digest"])
            return desc
        if media == MEDIA_DOCKER_LIST:
            raise OcicryptError(f"{where}: a Docker manifest list cannot hold encrypted images; use an OCI index")
        digest, size = lay.put_document({**doc, "manifests": new_list})
        return {**desc, "digest": digest, "size": size}
    if media == MEDIA_DOCKER_MANIFEST:
        raise OcicryptError(f"{where}: a Docker v2s2 manifest; ocicrypt's layer types need an OCI manifest (convert "
                            f"with skopeo copy --format oci)")
    if media != MEDIA_MANIFEST:
        raise OcicryptError(f"{where}.mediaType: {media[:80]!r} is not an OCI image manifest or index")
    doc = lay.read_document(desc, where)
    config = _descriptor(doc.get("config"), f"{where}.config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise OcicryptError(f"{where}.layers: missing")
    picked = _layer_indexes(chosen, len(layers), where)
    lay.keep.add(config["digest"])
    first = len(results)
    new_layers = []
    for i, layer in enumerate(layers):
        lwhere = f"{where}.layers[{i}]"
        layer = _descriptor(layer, lwhere)
        new, result = fn(lay, layer, lwhere, desc["digest"], i) if i in picked else (
            None, LayerResult(desc["digest"], i, "kept", layer["mediaType"], layer["digest"], why="not chosen"))
        results.append(result)
        if new is None:
            lay.keep.add(layer["digest"])
            new_layers.append(layer)
        else:
            new_layers.append(new)
    if new_layers == layers:
        lay.keep.add(desc["digest"])
        return desc
    new_doc = {**doc, "layers": new_layers}
    diff_ids = {r.index: r.diff_id for r in results[first:] if r.diff_id}
    if diff_ids:
        new_doc["config"] = _with_diff_ids(lay, config, diff_ids, len(layers), f"{where}.config")
    digest, size = lay.put_document(new_doc)
    return {**desc, "digest": digest, "size": size}


def _with_diff_ids(lay: _Layout, config: dict[str, Any], diff_ids: dict[int, str], count: int,
                   where: str) -> dict[str, Any]:
    """The config descriptor after replacing ``rootfs.diff_ids`` entries (layer index -> new diff id)."""
    doc = lay.read_document(config, where)
    rootfs = doc.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(rootfs, dict) or not isinstance(ids, list) or len(ids) != count:
        raise OcicryptError(f"{where}: rootfs.diff_ids does not list the manifest's {count} layers")
    ids = list(ids)
    for i, d in diff_ids.items():
        ids[i] = d
    digest, size = lay.put_document({**doc, "rootfs": {**rootfs, "diff_ids": ids}})
    return {**config, "digest": digest, "size": size}


# --------------------------------------------------------------------------------------------------
# the per-layer steps


def _encrypt_layer(ec: EncryptConfig) -> LayerFn:
    def step(lay: _Layout, layer: dict[str, Any], where: str, manifest: str,
             i: int) -> tuple[dict[str, Any] | None, LayerResult]:
        media = layer["mediaType"]
        if oc.is_encrypted_media_type(media):
            return None, LayerResult(manifest, i, "kept", media, layer["digest"], why="already encrypted")
        enc_media = oc.encrypted_media_type(media, f"{where}.mediaType")
        enc = cipher.LayerEncryptor()
        path, out = lay.staged_file()
        with out, lay.open_blob(layer, where) as src:
            while chunk := src.read(cipher.CHUNK):
                out.write(enc.update(chunk))
        pub, priv = enc.finalize()
        if priv.digest != layer["digest"] or enc.size != layer["size"]:
            raise OcicryptError(f"{where}: blob {layer['digest']} does not match its descriptor's digest and size")
        optsdata = priv.encode()
        annotations = oc.without_encryption_annotations(layer.get("annotations", {}))
        wrappers = []
        if ec.jwe_recipients:
            annotations[oc.ANNOTATION_JWE] = oc.join_wrapped([jwe.wrap(optsdata, ec.jwe_recipients)])
            wrappers.append("jwe")
        for client, values in ec.providers:
            annotations[client.attrs.annotation] = oc.join_wrapped([client.wrap(optsdata, values)])
            wrappers.append("provider." + client.attrs.name)
        annotations[oc.ANNOTATION_PUBOPTS] = pub.annotation()
        new_digest = enc.ciphertext_digest
        lay.add_staged(path, new_digest, 0o644)
        new = {**layer, "mediaType": enc_media, "digest": new_digest, "size": enc.size, "annotations": annotations}
        return new, LayerResult(manifest, i, "encrypted", enc_media, layer["digest"], new_digest, wrappers=wrappers)

    return step


def _unwrap(dc: DecryptConfig, annotations: dict[str, str], where: str) -> tuple[bytes, str]:
    """The layer's private options and the wrapper that opened them."""
    present = oc.wrapped_key_annotations(annotations)
    if not present:
        raise OcicryptError(f"{where}: no org.opencontainers.image.enc.keys.* annotation: no wrapped key to open")
    errors: list[str] = []
    if oc.ANNOTATION_JWE in present and dc.jwe_keys:
        for blob in oc.split_wrapped(present[oc.ANNOTATION_JWE], f"{where}.annotations[jwe]"):
            try:
                return jwe.unwrap(blob, dc.jwe_keys, f"{where} jwe"), "jwe"
            except OcicryptError as e:
                errors.append(str(e))
    for client, values in dc.providers:
        name = client.attrs.annotation
        if name not in present:
            continue
        for blob in oc.split_wrapped(present[name], f"{where}.annotations[provider.{client.attrs.name}]"):
            try:
                return client.unwrap(blob, values), "provider." + client.attrs.name
            except OcicryptError as e:
                errors.append(str(e))
    if errors:
        raise OcicryptError(errors[0] if len(errors) == 1 else f"{where}: no key opened it ({'; '.join(errors)})")
    schemes = ", ".join(sorted(k[len(oc.ANNOTATION_KEYS_PREFIX):] for k in present))
    raise OcicryptError(f"{where}: wrapped for {schemes}; no matching decryption key was given")


def _decrypt_layer(dc: DecryptConfig) -> LayerFn:
    def step(lay: _Layout, layer: dict[str, Any], where: str, manifest: str,
             i: int) -> tuple[dict[str, Any] | None, LayerResult]:
        media = layer["mediaType"]
        if not oc.is_encrypted_media_type(media):
            return None, LayerResult(manifest, i, "kept", media, layer["digest"], why="not encrypted")
        plain_media = oc.plain_media_type(media, f"{where}.mediaType")
        annotations = layer.get("annotations", {})
        pub = oc.decode_pubopts_annotation(annotations.get(oc.ANNOTATION_PUBOPTS), f"{where} pubopts")
        optsdata, wrapper = _unwrap(dc, annotations, where)
        priv = oc.decode_private(optsdata, f"{where} private options")
        path, out = lay.staged_file()
        with out, lay.open_blob(layer, where) as src:
            got = cipher.decrypt_file(src, out, pub, priv, compression=oc.compression(media), where=where)
        if got.ciphertext_digest != layer["digest"] or got.size != layer["size"]:
            raise OcicryptError(f"{where}: blob {layer['digest']} does not match its descriptor's digest and size")
        lay.add_staged(path, got.digest, 0o600)
        new = {k: v for k, v in layer.items() if k != "annotations"}
        new.update(mediaType=plain_media, digest=got.digest, size=got.size)
        kept = oc.without_encryption_annotations(annotations)
        if kept:
            new["annotations"] = kept
        return new, LayerResult(manifest, i, "decrypted", plain_media, layer["digest"], got.digest, wrappers=[wrapper])

    return step


# --------------------------------------------------------------------------------------------------
# the layout as a whole


def _read_small(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DOCUMENT + 1)
    except OSError as e:
        raise OcicryptError(f"{what} {path}: {e.strerror}") from None
    if len(data) > MAX_DOCUMENT:
        raise OcicryptError(f"{what} {path}: more than {MAX_DOCUMENT} bytes")
    return data


def read_index(root: str) -> dict[str, Any]:
    """A layout's ``index.json`` (after checking ``oci-layout``)."""
    marker = oc.parse_json_object(_read_small(os.path.join(root, "oci-layout"), "OCI layout"),
                                  f"{root}/oci-layout")
    if marker.get("imageLayoutVersion") != "1.0.0":
        raise OcicryptError(f"{root}/oci-layout: imageLayoutVersion {str(marker.get('imageLayoutVersion'))[:16]!r} "
                            f"is not 1.0.0")
    index = oc.parse_json_object(_read_small(os.path.join(root, "index.json"), "OCI layout"),
                                 f"{root}/index.json", MAX_DOCUMENT)
    if not isinstance(index.get("manifests"), list):
        raise OcicryptError(f"{root}/index.json: manifests missing")
    return index


def _transform(src: str, dst: str, fn: LayerFn, *, layers: Sequence[int] | None,
               refs: Sequence[str] | None) -> list[LayerResult]:
    src = os.path.abspath(src)
    dst = os.path.abspath(dst)
    in_place = os.path.realpath(src) == os.path.realpath(dst)
    index = read_index(src)
    if not in_place:
        if os.path.lexists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
            raise OcicryptError(f"destination {dst}: exists and is not an empty directory (give a new path, or the "
                                f"source itself to change it in place)")
        parent = os.path.dirname(dst)
        try:
            build = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(dst)}.tmp-")
        except OSError as e:
            raise OcicryptError(f"destination {dst}: {e.strerror}") from None
        stage = os.path.join(build, ".staging")
    else:
        build = ""
        try:
            stage = tempfile.mkdtemp(dir=src, prefix=".imagecrypt-")
        except OSError as e:
            raise OcicryptError(f"layout {src}: {e.strerror}") from None
    lay = _Layout(src, stage if in_place else _mkdir(stage))
    try:
        results: list[LayerResult] = []
        matched = False
        new_manifests = []
        for i, entry in enumerate(index["manifests"]):
            where = f"index.json manifests[{i}]"
            entry = _descriptor(entry, where)
            name = entry.get("annotations", {}).get(REF_NAME)
            if refs is not None and name not in refs:
                new_manifests.append(entry)
                lay.keep.add(entry["digest"])
                _keep_all(lay, entry, where)
                continue
            matched = True
            new_manifests.append(_walk(lay, entry, where + (f" ({name})" if name else ""), fn, layers, results))
        if refs is not None and not matched:
            raise OcicryptError(f"{src}/index.json: no image named {', '.join(refs)} "
                                f"(org.opencontainers.image.ref.name)")
        new_index = json.dumps({**index, "manifests": new_manifests}, separators=(",", ":"),
                               ensure_ascii=False).encode()
        if in_place:
            _publish(lay, src)
            _write_file(os.path.join(src, "index.json"), new_index, 0o644)
        else:
            _copy_kept(lay, build)
            _publish(lay, build)
            _write_file(os.path.join(build, "oci-layout"), b'{"imageLayoutVersion":"1.0.0"}', 0o644)
            _write_file(os.path.join(build, "index.json"), new_index, 0o644)
            shutil.rmtree(stage, ignore_errors=True)
            if os.path.isdir(dst):
                os.rmdir(dst)
            os.rename(build, dst)
            os.chmod(dst, 0o755)
            build = ""
        return results
    except OSError as e:
        raise OcicryptError(f"writing {dst}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if build:
            shutil.rmtree(build, ignore_errors=True)


def _mkdir(path: str) -> str:
    os.mkdir(path, 0o700)
    return path


def _keep_all(lay: _Layout, desc: dict[str, Any], where: str, depth: int = 0) -> None:
    """Record every blob an untouched index entry reaches (copied along to a new destination)."""
    if depth > MAX_DEPTH:
        raise OcicryptError(f"{where}: image indexes nested deeper than {MAX_DEPTH}")
    lay.keep.add(desc["digest"])
    if desc["mediaType"] in (MEDIA_INDEX, MEDIA_DOCKER_LIST):
        doc = lay.read_document(desc, where)
        for i, m in enumerate(doc.get("manifests") or []):
            _keep_all(lay, _descriptor(m, f"{where}.manifests[{i}]"), f"{where}.manifests[{i}]", depth + 1)
    elif desc["mediaType"] in (MEDIA_MANIFEST, MEDIA_DOCKER_MANIFEST):
        doc = lay.read_document(desc, where)
        lay.keep.add(_descriptor(doc.get("config"), f"{where}.config")["digest"])
        for i, layer in enumerate(doc.get("layers") or []):
            lay.keep.add(_descriptor(layer, f"{where}.layers[{i}]")["digest"])


def _copy_kept(lay: _Layout, build: str) -> None:
    for digest in sorted(lay.keep - set(lay.new)):
        src = _blob_path(lay.src, digest, "blob")
        dst = _blob_path(build, digest, "blob")
        os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            try:
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o644)
            except OSError as e:
                raise OcicryptError(f"blob {digest}: {e.strerror}") from None


def _publish(lay: _Layout, root: str) -> None:
    for digest, (path, mode) in lay.new.items():
        dst = _blob_path(root, digest, "blob")
        os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
        os.chmod(path, mode)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(path, dst)


def _write_file(path: str, data: bytes, mode: int) -> None:
    from inclavare.atomicfile import write_atomic

    write_atomic(path, data, mode=mode, sync_dir=True)


def encrypt_layout(src: str, dst: str, ec: EncryptConfig, *, layers: Sequence[int] | None = None,
                   refs: Sequence[str] | None = None) -> list[LayerResult]:
    """Encrypt the chosen layers (all by default; indexes as Python's, -1 the top layer) of the chosen images
    (``refs``: ``org.opencontainers.image.ref.name`` values; all by default) of layout ``src`` into ``dst``."""
    if ec.empty():
        raise OcicryptError("encrypt: no recipients (give a jwe public key or a key provider)")
    return _transform(src, dst, _encrypt_layer(ec), layers=layers, refs=refs)


def decrypt_layout(src: str, dst: str, dc: DecryptConfig, *, layers: Sequence[int] | None = None,
                   refs: Sequence[str] | None = None) -> list[LayerResult]:
    """Decrypt the encrypted layers (or the chosen ones) of the chosen images of ``src`` into ``dst``."""
    if not dc.jwe_keys and not dc.providers:
        raise OcicryptError("decrypt: no keys (give a jwe private key or a key provider)")
    return _transform(src, dst, _decrypt_layer(dc), layers=layers, refs=refs)


def describe_layout(src: str) -> list[dict[str, Any]]:
    """Each layer of each image in ``src``: media type, digest, size and, when encrypted, its cipher and the
    schemes its key is wrapped for (no key material)."""
    lay = _Layout(os.path.abspath(src), "")
    out: list[dict[str, Any]] = []

    def step(lay: _Layout, layer: dict[str, Any], where: str, manifest: str,
             i: int) -> tuple[dict[str, Any] | None, LayerResult]:
        row: dict[str, Any] = {"manifest": manifest, "layer": i, "mediaType": layer["mediaType"],
                               "digest": layer["digest"], "size": layer["size"]}
        ann = layer.get("annotations", {})
        if oc.is_encrypted_media_type(layer["mediaType"]):
            row["cipher"] = oc.decode_pubopts_annotation(ann.get(oc.ANNOTATION_PUBOPTS), f"{where} pubopts").cipher
            row["wrappedFor"] = sorted(k[len(oc.ANNOTATION_KEYS_PREFIX):] for k in oc.wrapped_key_annotations(ann))
        out.append(row)
        return None, LayerResult(manifest, i, "kept", layer["mediaType"], layer["digest"])

    for i, entry in enumerate(read_index(lay.src)["manifests"]):
        _walk(lay, _descriptor(entry, f"index.json manifests[{i}]"), f"index.json manifests[{i}]", step, None, [])
    return out
