#!/usr/bin/python3
"""Independent oracle for ipsecgw's ESP: scapy's own IPsec implementation.

Part 1 (offline, through test/tools esp_tool): for every algorithm ipsecgw
offers, IPv4 and IPv6 inner packets, with and without ESN, what ipsecgw writes
decrypts in scapy, and what scapy writes decrypts in ipsecgw.

Part 2 (on the wire, run inside the "peer" namespace): a running ipsecgw in
the "gw" namespace with four SAs (IPv4/IPv6 outer, raw ESP/UDP 4500). Scapy
captures what ipsecgw sends and decrypts it; scapy encrypts packets, sends
them, and a socket behind ipsecgw must receive the cleartext.

Exit status 0 only when every check passed. Prints "N passed, N failed".
"""
import hashlib
import hmac
import json
import os
import struct
import subprocess
import sys
import time

from scapy.all import IP, IPv6, TCP, UDP, ICMP, Raw, AsyncSniffer, send, conf
from scapy.layers.inet import IPOption_RR, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, RouterAlert, HBHOptUnknown, PadN
from scapy.layers.ipsec import AH, ESP, SecurityAssociation

conf.verb = 0
PASSED = 0
FAILED = 0


def check(ok, what):
    global PASSED, FAILED
    if ok:
        PASSED += 1
    else:
        FAILED += 1
        print("FAIL:", what, flush=True)


# strongSwan keyword -> (scapy crypt algo, scapy auth algo, key length bytes,
# integrity key length, icv size for AEAD)
ALGS = {
    "aes128gcm16": ("AES-GCM", None, 20, 0),
    "aes256gcm16": ("AES-GCM", None, 36, 0),
    "chacha20poly1305": ("CHACHA20-POLY1305", None, 36, 0),
    "aes128-sha256": ("AES-CBC", "SHA2-256-128", 16, 32),
    "aes256-sha512": ("AES-CBC", "SHA2-512-256", 32, 64),
    "aes256-sha384": ("AES-CBC", "SHA2-384-192", 32, 48),
    "aes128ctr-sha256": ("AES-CTR", "SHA2-256-128", 20, 32),
    "aes128-sha1": ("AES-CBC", "HMAC-SHA1-96", 16, 20),
    "3des-md5": ("3DES", "HMAC-MD5-96", 24, 16),
    "null-sha256": ("NULL", "SHA2-256-128", 0, 32),
    # Every other encryption the configuration accepts (key sizes 192/256
    # for CBC, CTR and GCM), each with an integrity algorithm of its own.
    "aes192-sha256": ("AES-CBC", "SHA2-256-128", 24, 32),
    "aes192ctr-sha1": ("AES-CTR", "HMAC-SHA1-96", 28, 20),
    "aes256ctr-sha512": ("AES-CTR", "SHA2-512-256", 36, 64),
    "aes192gcm16": ("AES-GCM", None, 28, 0),
}


def scapy_sa(alg, spi, key, outer_v6, esn=False, esn_hi=0, seq=1, natt=False, transport=False):
    crypt, auth, enc_len, integ_len = ALGS[alg]
    if transport:
        tunnel = None
    elif outer_v6:
        tunnel = IPv6(src="2001:db8::2", dst="2001:db8::1")
    else:
        tunnel = IP(src="198.51.100.2", dst="198.51.100.1")
    kwargs = dict(crypt_algo=crypt, crypt_key=key[:enc_len] if enc_len else None,
                  tunnel_header=tunnel, seq_num=seq, esn_en=esn, esn=esn_hi)
    if crypt in ("AES-GCM", "CHACHA20-POLY1305"):
        kwargs["crypt_icv_size"] = 16
    if auth:
        kwargs["auth_algo"] = auth
        kwargs["auth_key"] = key[enc_len:enc_len + integ_len]
    if natt:
        kwargs["nat_t_header"] = UDP(sport=4500, dport=4500)
    return SecurityAssociation(ESP, spi=spi, **kwargs)


DIGESTS = {"SHA2-256-128": (hashlib.sha256, 16), "SHA2-512-256": (hashlib.sha512, 32),
           "SHA2-384-192": (hashlib.sha384, 24), "HMAC-SHA1-96": (hashlib.sha1, 12),
           "HMAC-MD5-96": (hashlib.md5, 12)}


def esn_icv(alg, key, esp_without_icv, hi):
    """RFC 4303 2.2.1: the ICV covers the ESP packet and then seq_hi.

    scapy 2.5.0 leaves seq_hi out of the ESP ICV (it appends it for AH only),
    so for ESN with an HMAC the ICV is computed here with Python's hmac, and
    scapy is used for the cipher alone."""
    _, auth, enc_len, integ_len = ALGS[alg]
    digest, n = DIGESTS[auth]
    return hmac.new(key[enc_len:enc_len + integ_len], esp_without_icv + struct.pack("!L", hi),
                    digest).digest()[:n]


def esp_tool(tool, req):
    out = subprocess.run([tool], input=json.dumps(req).encode(), capture_output=True, check=True)
    return json.loads(out.stdout)


def inner_packets():
    v4 = IP(src="10.1.0.2", dst="10.2.0.2", id=7) / ICMP(id=1, seq=1) / Raw(b"oracle-v4" * 7)
    v6 = IPv6(src="fd01::2", dst="fd02::2") / UDP(sport=5000, dport=6000) / Raw(b"oracle-v6" * 5)
    return [("v4", bytes(v4)), ("v6", bytes(v6))]


def offline(tool):
    for alg in ALGS:
        enc_len, integ_len = ALGS[alg][2], ALGS[alg][3]
        key = os.urandom(enc_len + integ_len)
        for esn in (False, True):
            name = alg + ("-esn" if esn else "")
            for fam, inner in inner_packets():
                # ipsecgw -> scapy. With ESN, start above 2^32 so the high
                # half really is part of the ICV / AAD.
                seq = (1 << 32) + 5 if esn else 5
                res = esp_tool(tool, {"op": "encap", "esp": name, "spi": 0x1001,
                                      "key": key.hex(), "seq": seq, "packets": [inner.hex()]})
                esp_bytes = bytes.fromhex(res["packets"][0])
                sa = scapy_sa(alg, 0x1001, key, False, esn=esn, esn_hi=seq >> 32)
                wire = IP(bytes(IP(src="198.51.100.2", dst="198.51.100.1", proto=50) / Raw(esp_bytes)))
                hmac_esn = esn and ALGS[alg][1] is not None
                try:
                    if hmac_esn:
                        n = DIGESTS[ALGS[alg][1]][1]
                        if esn_icv(alg, key, esp_bytes[:-n], seq >> 32) != esp_bytes[-n:]:
                            raise ValueError("ESN ICV mismatch (RFC 4303 2.2.1)")
                    dec = sa.decrypt(wire, verify=not hmac_esn)
                    ok = bytes(dec) == inner
                except Exception as e:  # scapy raises on a bad ICV
                    ok = False
                    print("  scapy:", e)
                check(ok, f"{name} {fam}: scapy decrypts ipsecgw's packet")
                # scapy -> ipsecgw (ESN with high half 0: the receiver infers it).
                sa2 = scapy_sa(alg, 0x2002, key, False, esn=esn, esn_hi=0, seq=9)
                pkt = sa2.encrypt(IP(inner) if fam == "v4" else IPv6(inner))
                esp_only = bytes(pkt[ESP])
                if hmac_esn:
                    n = DIGESTS[ALGS[alg][1]][1]
                    esp_only = esp_only[:-n] + esn_icv(alg, key, esp_only[:-n], 0)
                res = esp_tool(tool, {"op": "decap", "esp": name, "spi": 0x2002,
                                      "key": key.hex(), "packets": [esp_only.hex()]})
                check(res["drops"][0] == "none" and bytes.fromhex(res["packets"][0]) == inner,
                      f"{name} {fam}: ipsecgw decrypts scapy's packet ({res['drops'][0]})")
                # A flipped bit in scapy's packet is refused by ipsecgw.
                bad = bytearray(esp_only)
                bad[len(bad) // 2] ^= 1
                res = esp_tool(tool, {"op": "decap", "esp": name, "spi": 0x2002,
                                      "key": key.hex(), "packets": [bytes(bad).hex()]})
                check(res["drops"][0] == "auth_failed", f"{name} {fam}: flipped bit refused")


def checksums_ok(pkt):
    """True when the IPv4 header checksum (if any) and the UDP/TCP checksum
    of `pkt` are what scapy computes for it."""
    cls = pkt.__class__
    again = pkt.copy()
    if IP in again:
        del again[IP].chksum
    l4 = UDP if UDP in again else TCP
    del again[l4].chksum
    again = cls(bytes(again))
    return (IP not in pkt or again[IP].chksum == pkt[IP].chksum) and again[l4].chksum == pkt[l4].chksum


def offline_transport(tool):
    """ESP transport mode (RFC 4303 3.1.1): no inner IP header; ipsecgw builds
    the header again on decapsulation, and the UDP checksum must still hold."""
    for alg in ALGS:
        enc_len, integ_len = ALGS[alg][2], ALGS[alg][3]
        key = os.urandom(enc_len + integ_len)
        for fam, (here, there) in (("v4", ("198.51.100.1", "198.51.100.2")),
                                   ("v6", ("2001:db8::1", "2001:db8::2"))):
            L3 = IPv6 if fam == "v6" else IP
            tr = {"mode": "transport", "local": here, "remote": there}
            # ipsecgw -> scapy
            out = L3(bytes(L3(src=here, dst=there) / UDP(sport=40000, dport=1701) / Raw(b"l2tp?" * 9)))
            res = esp_tool(tool, dict(tr, op="encap", esp=alg, spi=0x3001, key=key.hex(), seq=3,
                                      packets=[bytes(out).hex()]))
            ok = False
            if res["drops"][0] == "none":
                esp_bytes = bytes.fromhex(res["packets"][0])
                hdr = IPv6(src=here, dst=there, nh=50) if fam == "v6" else IP(src=here, dst=there, proto=50)
                sa = scapy_sa(alg, 0x3001, key, fam == "v6", seq=3, transport=True)
                try:
                    dec = sa.decrypt(L3(bytes(hdr / Raw(esp_bytes))))
                    ok = UDP in dec and bytes(dec[UDP]) == bytes(out[UDP])
                except Exception as e:
                    print("  scapy:", e)
            check(ok, f"{alg} transport {fam}: scapy decrypts ipsecgw's packet ({res['drops'][0]})")
            # scapy -> ipsecgw
            sa2 = scapy_sa(alg, 0x3002, key, fam == "v6", seq=4, transport=True)
            inp = L3(bytes(L3(src=there, dst=here) / UDP(sport=1701, dport=40000) / Raw(b"from-peer" * 5)))
            esp_only = bytes(sa2.encrypt(inp)[ESP])
            res = esp_tool(tool, dict(tr, op="decap", esp=alg, spi=0x3002, key=key.hex(),
                                      packets=[esp_only.hex()]))
            ok = False
            if res["drops"][0] == "none":
                got = L3(bytes.fromhex(res["packets"][0]))
                ok = (got.src == there and got.dst == here and UDP in got and
                      bytes(got[UDP]) == bytes(inp[UDP]) and checksums_ok(got))
            check(ok, f"{alg} transport {fam}: ipsecgw decrypts scapy's packet, header and checksums "
                      f"rebuilt ({res['drops'][0]})")


# AH keyword -> (scapy auth algo, key length)
AH_ALGS = {"md5": ("HMAC-MD5-96", 16), "sha1": ("HMAC-SHA1-96", 20), "sha256": ("SHA2-256-128", 32),
           "sha384": ("SHA2-384-192", 48), "sha512": ("SHA2-512-256", 64)}
AH_ADDRS = {"v4": ("198.51.100.1", "198.51.100.2"), "v6": ("2001:db8::1", "2001:db8::2")}


def ah_sa(alg, spi, key, fam, transport, esn=False, esn_hi=0, seq=1, sending_from_gw=False):
    here, there = AH_ADDRS[fam]
    L3 = IPv6 if fam == "v6" else IP
    src, dst = (here, there) if sending_from_gw else (there, here)
    return SecurityAssociation(AH, spi=spi, auth_algo=AH_ALGS[alg][0], auth_key=key, seq_num=seq,
                               esn_en=esn, esn=esn_hi,
                               tunnel_header=None if transport else L3(src=src, dst=dst))


def ah_inner(fam, transport, to_peer, options=False):
    """A UDP datagram: between the two addresses (transport) or two hosts
    behind the gateways (tunnel); IPv4 with Record Route (mutable) and Router
    Alert (immutable) options, IPv6 with hop-by-hop (Router Alert) and
    destination options (one with the may-change bit) when `options`."""
    here, there = AH_ADDRS[fam]
    if transport:
        src, dst = (here, there) if to_peer else (there, here)
    else:
        src, dst = ("10.1.0.2", "10.2.0.2") if fam == "v4" else ("fd01::2", "fd02::2")
        if not to_peer:
            src, dst = dst, src
    if fam == "v4":
        opts = [IPOption_RR(pointer=4, routers=["0.0.0.0", "0.0.0.0"]), IPOption_Router_Alert()] if options else []
        l3 = IP(src=src, dst=dst, id=4242, options=opts)
    else:
        l3 = IPv6(src=src, dst=dst)
        if options:
            l3 = l3 / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / \
                IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x3e, optdata=b"mutable!"), PadN(optdata=b"")])
    L3 = IPv6 if fam == "v6" else IP
    return L3(bytes(l3 / UDP(sport=40000, dport=1701) / Raw(b"ah-oracle" * 6)))


def xcbc_mac(key, data):
    """AES-XCBC-MAC (RFC 3566) on python3-cryptography's AES-ECB: scapy has
    no XCBC, so the oracle computes it here, over the packet scapy masks."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def ecb(k, block):
        e = Cipher(algorithms.AES(k), modes.ECB()).encryptor()
        return e.update(block) + e.finalize()
    k1, k2, k3 = (ecb(key, bytes([i]) * 16) for i in (1, 2, 3))
    blocks = [data[i:i + 16] for i in range(0, len(data), 16)] or [b""]
    e = bytes(16)
    for b in blocks[:-1]:
        e = ecb(k1, bytes(x ^ y for x, y in zip(e, b)))
    last = blocks[-1]
    if len(last) == 16:
        last = bytes(x ^ y for x, y in zip(last, k2))
    else:
        last = last + b"\x80" + bytes(15 - len(last))
        last = bytes(x ^ y for x, y in zip(last, k3))
    return ecb(k1, bytes(x ^ y for x, y in zip(e, last)))


def offline_ah_xcbc(tool):
    """AES-XCBC-96 in AH, which scapy lacks: the ICV computed here with
    scapy's own masking (zero_mutable_fields) and RFC 3566 on AES-ECB."""
    from scapy.layers.ipsec import zero_mutable_fields
    assert xcbc_mac(bytes.fromhex("000102030405060708090a0b0c0d0e0f"), bytes.fromhex("000102")).hex() == \
        "5b376580ae2f19afe7219ceef172756f"  # RFC 3566 test case #2: the oracle's own XCBC first
    key = os.urandom(16)
    for mode in ("tunnel", "transport"):
        transport = mode == "transport"
        for fam in ("v4", "v6"):
            here, there = AH_ADDRS[fam]
            L3 = IPv6 if fam == "v6" else IP
            what = f"AH aesxcbc {mode} {fam}"
            tr = {"ah": "aesxcbc", "mode": mode, "local": here, "remote": there, "key": key.hex()}
            inner = ah_inner(fam, transport, True)
            res = esp_tool(tool, dict(tr, op="encap", spi=0x5101, seq=3, packets=[bytes(inner).hex()]))
            ok = False
            if res["drops"][0] == "none":
                pkt = L3(bytes.fromhex(res["packets"][0]))
                icv = bytes(pkt[AH].icv)[:12]
                masked = zero_mutable_fields(pkt.copy(), sending=True)
                ok = xcbc_mac(key, bytes(masked))[:12] == icv
            check(ok, f"{what}: the oracle's XCBC matches ipsecgw's ICV ({res['drops'][0]})")
            # The other way: scapy builds the packet (with SHA1-96, whose ICV
            # has XCBC-96's length), the oracle puts in the XCBC ICV.
            inner = ah_inner(fam, transport, False)
            sa = SecurityAssociation(AH, spi=0x5102, auth_algo="HMAC-SHA1-96", auth_key=bytes(20), seq_num=4,
                                     tunnel_header=None if transport else L3(src=there, dst=here))
            pkt = L3(bytes(sa.encrypt(inner)))
            masked = zero_mutable_fields(pkt.copy(), sending=True)
            pkt[AH].icv = xcbc_mac(key, bytes(masked))[:12] + bytes(pkt[AH].icv)[12:]
            res = esp_tool(tool, dict(tr, op="decap", spi=0x5102, packets=[bytes(pkt).hex()]))
            check(res["drops"][0] == "none", f"{what}: ipsecgw verifies the oracle's XCBC ICV ({res['drops'][0]})")
            raw = bytearray(bytes(pkt))
            raw[-1] ^= 1
            res = esp_tool(tool, dict(tr, op="decap", spi=0x5102, packets=[bytes(raw).hex()]))
            check(res["drops"][0] == "auth_failed", f"{what}: a flipped payload bit fails ({res['drops'][0]})")


def gmac(key_salt, iv, data):
    """AES-GMAC (RFC 4543) on python3-cryptography's AES-GCM: the tag of an
    empty plaintext with `data` as additional data, nonce = salt || IV.
    scapy has no GMAC, so the oracle computes it here."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    return AESGCM(key_salt[:-4]).encrypt(key_salt[-4:] + iv, b"", data)


def offline_esp_gmac(tool):
    """ESP ENCR_NULL_AUTH_AES_GMAC (RFC 4543 3): the payload in the clear
    after an 8-byte IV; the ICV is GMAC over SPI, (extended) sequence number,
    IV, payload and trailer. Checked both ways with the oracle's own GMAC."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    probe = AESGCM(bytes(16)).encrypt(bytes(12), b"", b"")  # GMAC of nothing under zeros (NIST test case 1)
    assert probe.hex() == "58e2fccefa7e3061367f1d57a4e7455a", probe.hex()
    for bits in (128, 192, 256):
        key = os.urandom(bits // 8 + 4)
        for esn in (False, True):
            name = f"aes{bits}gmac" + ("-esn" if esn else "")
            for fam, inner in inner_packets():
                seq = (1 << 32) + 5 if esn else 5
                res = esp_tool(tool, {"op": "encap", "esp": name, "spi": 0x1001, "key": key.hex(), "seq": seq,
                                      "packets": [inner.hex()]})
                esp = bytes.fromhex(res["packets"][0])
                iv, body, icv = esp[8:16], esp[16:-16], esp[-16:]
                aad = esp[:4] + ((seq >> 32).to_bytes(4, "big") if esn else b"") + esp[4:8]
                padlen, nh = body[-2], body[-1]
                ok = (gmac(key, iv, aad + iv + body) == icv and body[:len(inner)] == inner and
                      len(body) - 2 - padlen == len(inner) and len(body) % 4 == 0 and nh in (4, 41))
                check(ok, f"{name} {fam}: the oracle's GMAC matches ipsecgw's ICV, the payload is in the clear")
                # The oracle's packet to ipsecgw (ESN: high half 0, inferred).
                pad = (4 - (len(inner) + 2) % 4) % 4
                body = inner + bytes(range(1, pad + 1)) + bytes([pad, 4 if fam == "v4" else 41])
                hdr = (0x2002).to_bytes(4, "big") + (9).to_bytes(4, "big")
                iv = os.urandom(8)
                aad = hdr[:4] + (bytes(4) if esn else b"") + hdr[4:]
                pkt = hdr + iv + body + gmac(key, iv, aad + iv + body)
                res = esp_tool(tool, {"op": "decap", "esp": name, "spi": 0x2002, "key": key.hex(),
                                      "packets": [pkt.hex()]})
                check(res["drops"][0] == "none" and bytes.fromhex(res["packets"][0]) == inner,
                      f"{name} {fam}: ipsecgw verifies the oracle's GMAC packet ({res['drops'][0]})")
                bad = bytearray(pkt)
                bad[20] ^= 1  # in the clear payload: only the ICV catches it
                res = esp_tool(tool, {"op": "decap", "esp": name, "spi": 0x2002, "key": key.hex(),
                                      "packets": [bytes(bad).hex()]})
                check(res["drops"][0] == "auth_failed", f"{name} {fam}: a flipped payload bit fails")


def offline_ah_gmac(tool):
    """AH with AUTH_AES_*_GMAC (RFC 4543 4): an 8-byte IV between the
    sequence number and the 16-byte ICV; GMAC over the packet masked as for
    any AH ICV (scapy's zero_mutable_fields), the IV as sent, then the high
    sequence half with ESN."""
    from scapy.layers.ipsec import zero_mutable_fields
    for bits in (128, 192, 256):
        key = os.urandom(bits // 8 + 4)
        for mode in ("tunnel", "transport"):
            transport = mode == "transport"
            for fam in ("v4", "v6"):
                for esn in (False, True):
                    here, there = AH_ADDRS[fam]
                    L3 = IPv6 if fam == "v6" else IP
                    name = f"aes{bits}gmac" + ("-esn" if esn else "")
                    what = f"AH {name} {mode} {fam}"
                    tr = {"ah": name, "mode": mode, "local": here, "remote": there, "key": key.hex()}
                    seq = (1 << 32) + 3 if esn else 3
                    res = esp_tool(tool, dict(tr, op="encap", spi=0x5201, seq=seq,
                                              packets=[bytes(ah_inner(fam, transport, True)).hex()]))
                    ok = False
                    if res["drops"][0] == "none":
                        pkt = L3(bytes.fromhex(res["packets"][0]))
                        field = bytes(pkt[AH].icv)
                        iv, icv = field[:8], field[8:24]
                        masked = zero_mutable_fields(pkt.copy(), sending=True)
                        masked[AH].icv = iv + bytes(len(field) - 8)
                        hi = (seq >> 32).to_bytes(4, "big") if esn else b""
                        ok = (gmac(key, iv, bytes(masked) + hi) == icv and pkt[AH].payloadlen == (
                            9 if fam == "v4" else 10) - 2 and iv == seq.to_bytes(8, "big"))
                    check(ok, f"{what}: the oracle's GMAC matches ipsecgw's ICV ({res['drops'][0]})")
                    # The other way: scapy builds the packet with SHA2-384-192 (a
                    # 24-byte ICV field, IV and GMAC's length), the oracle fills it.
                    sa = SecurityAssociation(AH, spi=0x5202, auth_algo="SHA2-384-192", auth_key=bytes(48), seq_num=4,
                                             tunnel_header=None if transport else L3(src=there, dst=here))
                    pkt = L3(bytes(sa.encrypt(ah_inner(fam, transport, False))))
                    iv = os.urandom(8)
                    field = bytes(pkt[AH].icv)
                    masked = zero_mutable_fields(pkt.copy(), sending=True)
                    masked[AH].icv = iv + bytes(len(field) - 8)
                    hi = bytes(4) if esn else b""
                    pkt[AH].icv = iv + gmac(key, iv, bytes(masked) + hi) + field[24:]
                    res = esp_tool(tool, dict(tr, op="decap", spi=0x5202, packets=[bytes(pkt).hex()]))
                    check(res["drops"][0] == "none", f"{what}: ipsecgw verifies the oracle's GMAC ICV ({res['drops'][0]})")
                    raw = bytearray(bytes(pkt))
                    raw[-1] ^= 1
                    res = esp_tool(tool, dict(tr, op="decap", spi=0x5202, packets=[bytes(raw).hex()]))
                    check(res["drops"][0] == "auth_failed", f"{what}: a flipped payload bit fails ({res['drops'][0]})")
                    pkt[AH].icv = bytes(8) + bytes(pkt[AH].icv)[8:]  # another IV: the ICV no longer holds
                    res = esp_tool(tool, dict(tr, op="decap", spi=0x5202, packets=[bytes(pkt).hex()]))
                    check(res["drops"][0] == "auth_failed", f"{what}: a changed IV fails ({res['drops'][0]})")


def offline_bundle(tool):
    """AH+ESP bundles (RFC 4301 4.5): ESP in tunnel or transport mode, then
    AH in transport mode over it (IP | AH | ESP). scapy verifies the AH
    layer, then decrypts the ESP inside, and builds the same the other way."""
    from scapy.layers.ipsec import zero_mutable_fields
    for mode in ("tunnel", "transport"):
        transport = mode == "transport"
        for fam in ("v4", "v6"):
            here, there = AH_ADDRS[fam]
            L3 = IPv6 if fam == "v6" else IP
            for esp_alg, ah_alg in (("aes128gcm16", "sha256"), ("aes256-sha512", "sha1")):
                what = f"AH+ESP {esp_alg} + {ah_alg} {mode} {fam}"
                ek = os.urandom(ALGS[esp_alg][2] + ALGS[esp_alg][3])
                ak = os.urandom(AH_ALGS[ah_alg][1])
                tr = {"esp": esp_alg, "ah": ah_alg, "mode": mode, "local": here, "remote": there,
                      "key": ek.hex(), "ah_key": ak.hex()}
                inner = ah_inner(fam, transport, True)
                res = esp_tool(tool, dict(tr, op="encap", spi=0x6001, ah_spi=0x6101, seq=5,
                                          packets=[bytes(inner).hex()]))
                ok = False
                try:
                    pkt = L3(bytes.fromhex(res["packets"][0]))
                    assert pkt[AH].nh == 50 and pkt[AH].spi == 0x6101, pkt.summary()
                    ah_sa = SecurityAssociation(AH, spi=0x6101, auth_algo=AH_ALGS[ah_alg][0], auth_key=ak)
                    esp_only = ah_sa.decrypt(pkt)  # raises on a bad AH ICV
                    esp_only = L3(bytes(esp_only))
                    esp_sa = scapy_sa(esp_alg, 0x6001, ek, fam == "v6", transport=transport)
                    dec = esp_sa.decrypt(esp_only)
                    got = bytes(dec)
                    if transport:
                        ok = bytes(L3(got)[L3].payload) == bytes(inner[L3].payload)
                    else:
                        ok = got == bytes(inner)
                except Exception as e:
                    print("  scapy:", e)
                check(ok, f"{what}: scapy verifies AH, then decrypts the ESP inside")
                # scapy's bundle to ipsecgw: ESP first, AH (transport) over it.
                inner = ah_inner(fam, transport, False)
                esp_sa = scapy_sa(esp_alg, 0x6002, ek, fam == "v6", transport=transport)
                esp_pkt = esp_sa.encrypt(inner)
                # AH over it, built here: scapy's own AH misplaces the ICV over
                # an ESP payload (it reads the ESP bytes short). Its masking
                # (zero_mutable_fields) and HMAC from hashlib give the ICV.
                esp_bytes = bytes(esp_pkt[ESP])
                n = DIGESTS[AH_ALGS[ah_alg][0]][1]
                field = n + ((-(12 + n)) % (8 if fam == "v6" else 4))
                ah = AH(nh=50, payloadlen=(12 + field) // 4 - 2, spi=0x6102, seq=3, icv=bytes(field))
                outer = IP(src=there, dst=here, id=99) if fam == "v4" else IPv6(src=there, dst=here)
                wire = L3(bytes(outer / ah / Raw(esp_bytes)))
                masked = zero_mutable_fields(wire.copy(), sending=True)
                icv = hmac.new(ak, bytes(masked), DIGESTS[AH_ALGS[ah_alg][0]][0]).digest()[:n]
                wire[AH].icv = icv + bytes(field - n)
                res = esp_tool(tool, dict(tr, op="decap", spi=0x6002, ah_spi=0x6102, packets=[bytes(wire).hex()]))
                good = res["drops"][0] == "none"
                if good:
                    got = L3(bytes.fromhex(res["packets"][0]))
                    good = (bytes(got) == bytes(inner)) if not transport else \
                        bytes(got[L3].payload) == bytes(inner[L3].payload)
                check(good, f"{what}: ipsecgw takes scapy's bundle ({res['drops'][0]})")
                # ESP alone (the AH layer taken off by an attacker) is not the bundle.
                res = esp_tool(tool, dict(tr, op="decap", spi=0x6002, ah_spi=0x6102, packets=[bytes(esp_pkt).hex()]))
                check(res["drops"][0] != "none", f"{what}: ESP without its AH refused ({res['drops'][0]})")


def offline_ah(tool):
    """AH (RFC 4302) both ways: every integrity algorithm, tunnel and
    transport, IPv4 and IPv6, with and without ESN; with IPv4 options and
    IPv6 extension headers in transport mode; the mutable fields may change
    en route, nothing else may."""
    for alg, (_, klen) in AH_ALGS.items():
        key = os.urandom(klen)
        for mode in ("tunnel", "transport"):
            transport = mode == "transport"
            for fam in ("v4", "v6"):
                here, there = AH_ADDRS[fam]
                L3 = IPv6 if fam == "v6" else IP
                for esn in (False, True):
                    name = alg + ("-esn" if esn else "")
                    what = f"AH {name} {mode} {fam}"
                    tr = {"ah": name, "mode": mode, "local": here, "remote": there, "key": key.hex()}
                    # ipsecgw -> scapy
                    seq = (1 << 32) + 7 if esn else 7
                    for options in ((False, True) if transport else (False,)):
                        inner = ah_inner(fam, transport, True, options)
                        res = esp_tool(tool, dict(tr, op="encap", spi=0x5001, seq=seq, packets=[bytes(inner).hex()]))
                        ok = False
                        if res["drops"][0] == "none":
                            sa = ah_sa(alg, 0x5001, key, fam, transport, esn, seq >> 32, seq, sending_from_gw=True)
                            try:
                                dec = sa.decrypt(L3(bytes.fromhex(res["packets"][0])))
                                if transport:
                                    dec = L3(bytes(dec))  # scapy leaves the payload undissected
                                    ok = UDP in dec and bytes(dec[UDP]) == bytes(inner[UDP]) and dec.src == inner.src
                                else:
                                    ok = bytes(dec) == bytes(inner)
                            except Exception as e:
                                print("  scapy:", e)
                        check(ok, f"{what}{' with options' if options else ''}: scapy verifies ipsecgw's packet "
                                  f"({res['drops'][0]})")
                    # scapy -> ipsecgw
                    for options in ((False, True) if transport else (False,)):
                        inner = ah_inner(fam, transport, False, options)
                        sa2 = ah_sa(alg, 0x5002, key, fam, transport, esn, 0, 11)
                        wire = L3(bytes(sa2.encrypt(inner)))
                        res = esp_tool(tool, dict(tr, op="decap", spi=0x5002, packets=[bytes(wire).hex()]))
                        got = bytes.fromhex(res["packets"][0]) if res["drops"][0] == "none" else b""
                        want = inner
                        if options and fam == "v4":
                            # The mutable option (Record Route), outside the ICV, comes back as NOPs.
                            want = inner.copy()
                            rr_len = len(bytes(want.options[0]))
                            want.options = [Raw(b"\x01" * rr_len)] + want.options[1:]
                            del want.chksum
                            want = IP(bytes(want))
                        check(got == bytes(want), f"{what}{' with options' if options else ''}: ipsecgw verifies "
                                                  f"scapy's packet and gives back the original"
                                                  f"{' (the mutable option as NOPs)' if options and fam == 'v4' else ''} "
                                                  f"({res['drops'][0]})")
                        if esn or alg != "sha256":
                            continue
                        # What routers may change (and RR's data, a mutable option) ...
                        moved = wire.copy()
                        if fam == "v4":
                            moved.ttl -= 3
                            moved.tos = 0x48
                            moved.flags = "DF"
                            if options:
                                moved.options[0].routers = ["192.0.2.9", "0.0.0.0"]
                            del moved.chksum
                        else:
                            moved.hlim -= 3
                            moved.tc = 0x48
                            moved.fl = 0x12345
                        res = esp_tool(tool, dict(tr, op="decap", spi=0x5002, packets=[bytes(L3(bytes(moved))).hex()]))
                        check(res["drops"][0] == "none", f"{what}{' with options' if options else ''}: mutable fields "
                                                         f"changed en route still verify ({res['drops'][0]})")
                        # ... and what they may not: the payload, the
                        # source address, the IPv4 ID.
                        raw = bytearray(bytes(wire))
                        raw[-1] ^= 1
                        bad = [bytes(raw)]
                        other = wire.copy()
                        other.src = "198.51.100.77" if fam == "v4" else "2001:db8::77"
                        if fam == "v4":
                            del other.chksum
                            idc = wire.copy()
                            idc.id ^= 1
                            del idc.chksum
                            bad.append(bytes(L3(bytes(idc))))
                        bad.append(bytes(L3(bytes(other))))
                        res = esp_tool(tool, dict(tr, op="decap", spi=0x5002, replay_window=0,
                                                  packets=[b.hex() for b in bad]))
                        check(res["drops"] == ["auth_failed"] * len(bad),
                              f"{what}{' with options' if options else ''}: payload, source address and ID are under "
                              f"the ICV ({res['drops']})")


# Part 2 ---------------------------------------------------------------------

WIRE_SAS = [
    # name, alg, outer v6, natt, remote inner net, remote inner host
    ("v4raw", "aes256gcm16", False, False, "10.2.1.5"),
    ("v4udp", "chacha20poly1305", False, True, "10.2.2.5"),
    ("v6raw", "aes128-sha256", True, False, "fd02:3::5"),
    ("v6udp", "aes128ctr-sha256", True, True, "fd02:4::5"),
]


def gw_exec(ns, code, background=False):
    cmd = ["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", code]
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE)
    return subprocess.run(cmd, capture_output=True, timeout=20)


def wire(keys_file, gw_ns, peer_if):
    keys = json.load(open(keys_file))
    for i, (name, alg, v6, natt, remote_host) in enumerate(WIRE_SAS):
        k = keys[name]
        out_key, in_key = bytes.fromhex(k["out"]), bytes.fromhex(k["in"])
        local_host = "fd01::1" if ":" in remote_host else "10.1.0.1"
        fam = "AF_INET6" if ":" in remote_host else "AF_INET"
        payload = f"to-peer-{name}".encode()
        # ipsecgw -> scapy: a socket behind the gateway sends to the remote net.
        sniffer = AsyncSniffer(iface=peer_if, store=True,
                               lfilter=lambda p: (ESP in p) or (UDP in p and p[UDP].sport == 4500))
        sniffer.start()
        time.sleep(0.3)
        gw_exec(gw_ns, f"import socket; s=socket.socket(socket.{fam}, socket.SOCK_DGRAM); "
                       f"s.bind(('{local_host}', 0)); s.sendto({payload!r}, ('{remote_host}', 9999))")
        time.sleep(0.5)
        caught = sniffer.stop()
        rx_sa = scapy_sa(alg, int(k["out_spi"], 16), out_key, v6)
        found = False
        for p in caught:
            if natt:
                if UDP not in p or p[UDP].sport != 4500 or p[UDP].dport != 4500:
                    continue
                data = bytes(p[UDP].payload)
                if len(data) < 8 or data[:4] == b"\0\0\0\0":
                    continue  # keepalive or non-ESP marker
                ip_hdr = IPv6(src=p[IPv6].src, dst=p[IPv6].dst, nh=50) if v6 else \
                    IP(src=p[IP].src, dst=p[IP].dst, proto=50)
                p = (IPv6 if v6 else IP)(bytes(ip_hdr / Raw(data)))
            p = p[IPv6] if v6 else p[IP]  # drop the link layer
            if ESP not in p or p[ESP].spi != int(k["out_spi"], 16):
                continue
            try:
                inner = rx_sa.decrypt(p)
            except Exception as e:
                print("  scapy:", e)
                continue
            if UDP in inner and bytes(inner[UDP].payload) == payload and inner[UDP].dport == 9999:
                found = True
        check(found, f"wire {name} ({alg}): scapy captured and decrypted ipsecgw's packet")

        # scapy -> ipsecgw: a listener behind the gateway must get the cleartext.
        listener = gw_exec(gw_ns, f"import socket; s=socket.socket(socket.{fam}, socket.SOCK_DGRAM); "
                                  f"s.bind(('{local_host}', 7777)); s.settimeout(5); "
                                  f"print(s.recvfrom(2000)[0].decode(), flush=True)", background=True)
        time.sleep(0.4)
        tx_sa = scapy_sa(alg, int(k["in_spi"], 16), in_key, v6, natt=natt, seq=1)
        inner_pkt = (IPv6(src=remote_host, dst=local_host) if v6 else IP(src=remote_host, dst=local_host)) \
            / UDP(sport=9999, dport=7777) / Raw(f"from-peer-{name}".encode())
        pkt = tx_sa.encrypt(inner_pkt)
        if natt:
            # scapy 2.5.0 fixes the UDP length at 8 and the checksum at 0
            # before the ESP payload is attached (a zero checksum is also
            # invalid over IPv6): let scapy recompute both. The ESP bytes
            # stay exactly as scapy produced them.
            del pkt[UDP].len
            del pkt[UDP].chksum
            if v6:
                del pkt[IPv6].plen
            else:
                del pkt[IP].len
                del pkt[IP].chksum
            pkt = pkt.__class__(bytes(pkt))
        send(pkt)
        try:
            out, _ = listener.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            listener.kill()
            out = b""
        check(out.decode().strip() == f"from-peer-{name}",
              f"wire {name} ({alg}): ipsecgw decrypted scapy's packet ({out!r})")


WIRE_TRANSPORT = [
    # name, alg, here (the gateway), there (scapy)
    ("v4tr", "aes128gcm16", "198.51.100.1", "198.51.100.2"),
    ("v6tr", "aes128-sha256", "2001:db8::1", "2001:db8::2"),
]


def wire_transport(keys_file, gw_ns, peer_if):
    """Transport-mode SAs between the gateway's own address and scapy's: a
    socket on the gateway host talks to the peer's address itself."""
    keys = json.load(open(keys_file))
    for name, alg, here, there in WIRE_TRANSPORT:
        k = keys[name]
        v6 = ":" in here
        L3 = IPv6 if v6 else IP
        fam = "AF_INET6" if v6 else "AF_INET"
        payload = f"to-peer-{name}".encode()
        sniffer = AsyncSniffer(iface=peer_if, store=True, lfilter=lambda p: ESP in p or UDP in p)
        sniffer.start()
        time.sleep(0.3)
        gw_exec(gw_ns, f"import socket; s=socket.socket(socket.{fam}, socket.SOCK_DGRAM); "
                       f"s.sendto({payload!r}, ('{there}', 1701))")
        time.sleep(0.5)
        caught = sniffer.stop()
        rx_sa = scapy_sa(alg, int(k["out_spi"], 16), bytes.fromhex(k["out"]), v6, transport=True)
        found = clear = False
        for p in caught:
            if UDP in p and bytes(p[UDP].payload) == payload:
                clear = True  # the datagram left unprotected
            if ESP not in p or p[ESP].spi != int(k["out_spi"], 16):
                continue
            try:
                inner = rx_sa.decrypt(p[L3])
            except Exception as e:
                print("  scapy:", e)
                continue
            found = found or (inner.src == here and UDP in inner and inner[UDP].dport == 1701 and
                              bytes(inner[UDP].payload) == payload and checksums_ok(inner))
        check(found and not clear, f"wire {name} ({alg}, transport): the host's own datagram to {there} left "
                                   f"only in ESP, scapy decrypted it")
        listener = gw_exec(gw_ns, f"import socket; s=socket.socket(socket.{fam}, socket.SOCK_DGRAM); "
                                  f"s.bind(('{here}', 7777)); s.settimeout(5); "
                                  f"d, a = s.recvfrom(2000); print(d.decode(), a[0], flush=True)", background=True)
        time.sleep(0.4)
        tx_sa = scapy_sa(alg, int(k["in_spi"], 16), bytes.fromhex(k["in"]), v6, transport=True)
        send(tx_sa.encrypt(L3(bytes(L3(src=there, dst=here) / UDP(sport=1701, dport=7777) /
                                    Raw(f"from-peer-{name}".encode())))))
        try:
            out, _ = listener.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            listener.kill()
            out = b""
        check(out.decode().split() == [f"from-peer-{name}", there],
              f"wire {name} ({alg}, transport): the gateway host's socket got scapy's datagram from {there} "
              f"({out!r})")


WIRE_AH = [
    # name, alg, outer v6, remote inner host
    ("v4ah", "sha256", False, "10.2.5.5"),
    ("v6ah", "sha512", True, "fd02:5::5"),
]


def wire_ah(keys_file, gw_ns, peer_if):
    """AH tunnels on the wire: the gateway's AH (IP protocol 51, outer
    header built by ipsecgw) verifies in scapy; scapy's AH reaches a socket
    behind the gateway."""
    keys = json.load(open(keys_file))
    for name, alg, v6, remote_host in WIRE_AH:
        k = keys[name]
        fam = "v6" if v6 else "v4"
        L3 = IPv6 if v6 else IP
        local_host = "fd01::1" if v6 else "10.1.0.1"
        sfam = "AF_INET6" if v6 else "AF_INET"
        payload = f"to-peer-{name}".encode()
        sniffer = AsyncSniffer(iface=peer_if, store=True, lfilter=lambda p: AH in p)
        sniffer.start()
        time.sleep(0.3)
        gw_exec(gw_ns, f"import socket; s=socket.socket(socket.{sfam}, socket.SOCK_DGRAM); "
                       f"s.bind(('{local_host}', 0)); s.sendto({payload!r}, ('{remote_host}', 9999))")
        time.sleep(0.5)
        caught = sniffer.stop()
        rx_sa = ah_sa(alg, int(k["out_spi"], 16), bytes.fromhex(k["out"]), fam, False, sending_from_gw=True)
        found = False
        for p in caught:
            if p[AH].spi != int(k["out_spi"], 16):
                continue
            try:
                inner = rx_sa.decrypt(L3(bytes(p[L3])))
            except Exception as e:
                print("  scapy:", e)
                continue
            inner = L3(bytes(inner))
            found = found or (UDP in inner and bytes(inner[UDP].payload) == payload)
        check(found, f"wire {name} (AH {alg}): scapy captured and verified ipsecgw's packet")
        listener = gw_exec(gw_ns, f"import socket; s=socket.socket(socket.{sfam}, socket.SOCK_DGRAM); "
                                  f"s.bind(('{local_host}', 7777)); s.settimeout(5); "
                                  f"print(s.recvfrom(2000)[0].decode(), flush=True)", background=True)
        time.sleep(0.4)
        tx_sa = ah_sa(alg, int(k["in_spi"], 16), bytes.fromhex(k["in"]), fam, False)
        send(tx_sa.encrypt(L3(bytes(L3(src=remote_host, dst=local_host) / UDP(sport=9999, dport=7777) /
                                    Raw(f"from-peer-{name}".encode())))))
        try:
            out, _ = listener.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            listener.kill()
            out = b""
        check(out.decode().strip() == f"from-peer-{name}",
              f"wire {name} (AH {alg}): ipsecgw verified scapy's packet ({out!r})")


def main():
    mode = sys.argv[1]
    if mode == "offline":
        offline(sys.argv[2])
        offline_transport(sys.argv[2])
        offline_ah(sys.argv[2])
        offline_ah_xcbc(sys.argv[2])
        offline_ah_gmac(sys.argv[2])
        offline_esp_gmac(sys.argv[2])
        offline_bundle(sys.argv[2])
    else:
        wire(sys.argv[2], sys.argv[3], sys.argv[4])
        wire_transport(sys.argv[2], sys.argv[3], sys.argv[4])
        wire_ah(sys.argv[2], sys.argv[3], sys.argv[4])
    print(f"{PASSED} passed, {FAILED} failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
