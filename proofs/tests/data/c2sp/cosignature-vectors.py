# Vectors for proofs/tests/cosignature.rs, computed with Python's `cryptography` from the
# definitions in C2SP tlog-cosignature v1 and signed-note (Ed25519 signatures are deterministic).
# Run: python3 cosignature-vectors.py
import base64, hashlib, struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives import serialization
b64 = lambda b: base64.b64encode(b).decode()
def pub(priv): return priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
def keyid(name, typ, pk): return hashlib.sha256(name.encode()+b'\n'+bytes([typ])+pk).digest()[:4]
def vkey(name, typ, pk): return f"{name}+{keyid(name,typ,pk).hex()}+{b64(bytes([typ])+pk)}"

cp = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
# log key (type 0x01), seed = 32 x 0x01
logseed = bytes([1])*32; logk = Ed25519PrivateKey.from_private_bytes(logseed); logname = "example.com/behind-the-sofa"
print("LOG seed hex:", logseed.hex())
print("LOG vkey:", vkey(logname, 1, pub(logk)))
print("LOG sig line: \u2014", logname, b64(keyid(logname,1,pub(logk)) + logk.sign(cp.encode())))
# witness key (type 0x04), seed = 32 x 0x02
wseed = bytes([2])*32; wk = Ed25519PrivateKey.from_private_bytes(wseed); wname = "witness.example.com/w1"
print("WITNESS seed hex:", wseed.hex())
print("WITNESS pub b64:", b64(pub(wk)))
print("WITNESS vkey:", vkey(wname, 4, pub(wk)))
ts = 1679315147
msg = f"cosignature/v1\ntime {ts}\n".encode() + cp.encode()
print("signed message repr:", repr(msg.decode()))
sig = wk.sign(msg)
line = keyid(wname,4,pub(wk)) + struct.pack('>Q', ts) + sig
print("COSIG line: \u2014", wname, b64(line))
# same key, type 0x01 key id differs
print("same witness key as type 0x01 key id:", keyid(wname,1,pub(wk)).hex(), " as 0x04:", keyid(wname,4,pub(wk)).hex())
print("empty tree root:", b64(hashlib.sha256(b"").digest()))
# verify roundtrip
Ed25519PublicKey.from_public_bytes(pub(wk)).verify(sig, msg); print("roundtrip ok")
