#!/usr/bin/env python3
"""An independent decryptor for kms archives, written from
docs/archive-format.md alone (Python + the 'cryptography' package).

    kmsa_decrypt.py ARCHIVE DATA_KEY_HEX [KEY=VALUE]...   -> plaintext on stdout

The data key is given directly (kmsd would unwrap the header's blob). With
--check-vectors DIR it decrypts the known-answer vectors of that directory
(README.md there lists their inputs) and compares with the expected
plaintext; exit status 0 only if all match."""
import hashlib
import hmac
import os
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class ArchiveError(Exception):
    pass


def canonical_context(pairs):
    out = struct.pack(">I", len(pairs))
    for k, v in sorted(pairs.items(), key=lambda kv: kv[0].encode()):
        out += struct.pack(">I", len(k.encode())) + k.encode()
        out += struct.pack(">I", len(v.encode())) + v.encode()
    return out


def decrypt(data, data_key, context):
    if data[:4] != b"KMSA":
        raise ArchiveError("not an archive")
    if len(data) < 9:
        raise ArchiveError("truncated")
    if data[4] != 1:
        raise ArchiveError("unsupported version")
    (hlen,) = struct.unpack(">I", data[5:9])
    if len(data) < hlen:
        raise ArchiveError("truncated")
    (seg,) = struct.unpack(">I", data[9:13])
    salt, prefix = data[13:45], data[45:52]
    (clen,) = struct.unpack(">H", data[52:54])
    ctx = data[54 : 54 + clen]
    if ctx != canonical_context(context):
        raise ArchiveError("wrong context")
    p = 54 + clen
    commitment, mac = data[p : p + 32], data[p + 32 : p + 64]
    bound = data[:5] + b"\0\0\0\0" + data[9:p]
    okm = HKDF(
        algorithm=hashes.SHA256(), length=96, salt=salt, info=b"kms archive v1" + bound
    ).derive(data_key)
    k_seg, k_commit, k_mac = okm[:32], okm[32:64], okm[64:]
    if not hmac.compare_digest(k_commit, commitment):
        raise ArchiveError("corrupt: commitment")
    if not hmac.compare_digest(hmac.new(k_mac, bound + commitment, hashlib.sha256).digest(), mac):
        raise ArchiveError("corrupt: header MAC")
    body = data[hlen:]
    aes = AESGCM(k_seg)
    out, i, off = b"", 0, 0
    while True:
        rest = len(body) - off
        last = rest <= seg + 16
        chunk = body[off : off + min(rest, seg + 16)]
        if len(chunk) < 16:
            raise ArchiveError("corrupt: short segment")
        nonce = prefix + struct.pack(">I", i) + (b"\x01" if last else b"\x00")
        try:
            out += aes.decrypt(nonce, chunk, b"")
        except Exception:
            raise ArchiveError("corrupt or truncated: segment %d" % i)
        if last:
            return out
        off += seg + 16
        i += 1


def check_vectors(directory):
    key = bytes(range(0x40, 0x60))
    ctx = {"app": "backup", "db": "billing"}
    sizes = {"empty.kmsa": 0, "one-byte.kmsa": 1, "3seg-plus-7.kmsa": 3 * 4096 + 7}
    for name, n in sizes.items():
        with open(os.path.join(directory, name), "rb") as f:
            pt = decrypt(f.read(), key, ctx)
        if pt != bytes(i % 251 for i in range(n)):
            print("%s: wrong plaintext" % name)
            return 1
        print("%s: ok (%d bytes)" % (name, n))
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "--check-vectors":
        return check_vectors(argv[2])
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        data = f.read()
    context = dict(a.split("=", 1) for a in argv[3:])
    try:
        sys.stdout.buffer.write(decrypt(data, bytes.fromhex(argv[2]), context))
    except ArchiveError as e:
        print("kmsa_decrypt: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
