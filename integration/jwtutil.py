"""JWT helpers for the end-to-end tests and benchmarks, with the standard library and the
openssl command line only (no `cryptography` in .venv): decoding, RS256/ES256 signature
checks, and keys and signatures made by openssl for tokens the tests sign themselves."""

import base64
import hashlib
import json
import os
import subprocess
import tempfile


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url_int(s):
    return int.from_bytes(b64url_decode(s), "big")


def jwt_parts(token):
    """(header, claims, signed bytes, signature bytes) of a compact JWS, unverified."""
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), f"{h}.{p}".encode(), b64url_decode(s)


def claims_of(token):
    return jwt_parts(token)[1]


def rs256_valid(jwk, signed, sig):
    """RSASSA-PKCS1-v1_5 with SHA-256."""
    n, e = b64url_int(jwk["n"]), b64url_int(jwk["e"])
    k = (n.bit_length() + 7) // 8
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(signed).digest()
    expected = b"\x00\x01" + b"\xff" * (k - 3 - len(digest_info)) + b"\x00" + digest_info
    return len(sig) == k and pow(int.from_bytes(sig, "big"), e, n).to_bytes(k, "big") == expected


# NIST P-256
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
A = P - 3
G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)


def _add(p1, p2):
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p1 == p2:
        m = (3 * x1 * x1 + A) * pow(2 * y1, -1, P) % P
    else:
        m = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (m * m - x1 - x2) % P
    return x3, (m * (x1 - x3) - y1) % P


def _mul(k, point):
    result = None
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def es256_valid(jwk, signed, sig):
    """ECDSA P-256 with SHA-256; the JWS signature is r || s, 32 bytes each."""
    if len(sig) != 64:
        return False
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    if not (0 < r < N and 0 < s < N):
        return False
    q = (b64url_int(jwk["x"]), b64url_int(jwk["y"]))
    z = int.from_bytes(hashlib.sha256(signed).digest(), "big")
    w = pow(s, -1, N)
    point = _add(_mul(z * w % N, G), _mul(r * w % N, q))
    return point is not None and point[0] % N == r


def verify(token, jwks):
    """True when `token` is signed (RS256 or ES256) by the key of `jwks` its kid names."""
    header, _, signed, sig = jwt_parts(token)
    keys = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
    if len(keys) != 1:
        return False
    check = {"RS256": rs256_valid, "ES256": es256_valid}.get(header.get("alg"))
    return bool(check) and check(keys[0], signed, sig)


# --- keys and signatures made with openssl --------------------------------------------------


def _openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def _der_len(buf, i):
    n = buf[i]
    if n < 0x80:
        return n, i + 1
    k = n & 0x7F
    return int.from_bytes(buf[i + 1 : i + 1 + k], "big"), i + 1 + k


def _der_ints(der):
    """The INTEGERs of a flat DER SEQUENCE (an ECDSA signature, an RSA public key)."""
    assert der[0] == 0x30
    _, i = _der_len(der, 1)
    out = []
    while i < len(der):
        assert der[i] == 0x02
        n, i = _der_len(der, i + 1)
        out.append(int.from_bytes(der[i : i + n], "big"))
        i += n
    return out


class Key:
    """A signing key: PKCS#8 PEM (as the gateway's `authtoken.keys[].private_key_pem` wants),
    its public JWK, and JWS signing."""

    def __init__(self, alg="ES256", kid="k1"):
        self.alg, self.kid = alg, kid
        if alg == "ES256":
            self.pem = _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256").decode()
            spki = _openssl("pkey", "-pubout", "-outform", "DER", data=self.pem.encode())
            point = spki[-65:]
            assert point[0] == 4
            self.jwk = {"kty": "EC", "crv": "P-256", "x": b64url(point[1:33]), "y": b64url(point[33:]), "kid": kid, "alg": alg, "use": "sig"}
        elif alg == "RS256":
            self.pem = _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048").decode()
            rsa_pub = _openssl("pkey", "-pubout", "-outform", "DER", data=self.pem.encode())
            # SubjectPublicKeyInfo: the RSAPublicKey SEQUENCE sits after the BIT STRING's 0 byte.
            n, e = _der_ints(rsa_pub[rsa_pub.rfind(b"\x03\x82") + 5 :])
            self.jwk = {"kty": "RSA", "n": b64url(n.to_bytes((n.bit_length() + 7) // 8, "big")), "e": b64url(e.to_bytes(3, "big")), "kid": kid, "alg": alg, "use": "sig"}
        else:
            raise ValueError(alg)
        fd, self.pem_path = tempfile.mkstemp(prefix="envoy-wam-key-", suffix=".pem")
        with os.fdopen(fd, "w") as f:
            f.write(self.pem)

    def jwks(self):
        return {"keys": [self.jwk]}

    def sign(self, claims, typ="JWT"):
        header = {"alg": self.alg, "kid": self.kid, "typ": typ}
        signed = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        der = _openssl("dgst", "-sha256", "-sign", self.pem_path, data=signed.encode())
        if self.alg == "ES256":
            r, s = _der_ints(der)
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            sig = der
        return f"{signed}.{b64url(sig)}"
