"""Re-signing harness: validly signed TDX quotes and collateral under a throwaway test root.

TEST CODE ONLY (DESIGN §2.7, research/dcap.md §5.3). Starting from the real v4 quote and its
collateral in ../shared/testdata/tdx/, it generates a fresh P-256 PKI (root, PCK platform CA,
PCK leaf, TCB signing cert, attestation key), patches the TD report body (MR_TD, RTMRs,
REPORTDATA, attributes), rebinds the QE report to the new attestation key, re-signs everything
and issues CRLs, so that `dcap_qvl.QuoteVerifier(test_root_der)` accepts the result — and
Intel's production root rejects it.

The PCK leaf keeps the real leaf's Intel SGX extension (FMSPC, CPU SVNs, PCE SVN, platform
flags), so the real TCB info's levels still match; the QE report keeps the real TD_QE's
MRSIGNER/ISVPRODID/ISVSVN, so the real QE identity still matches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

TDX_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "testdata" / "tdx"
TEMPLATE_QUOTE = TDX_DIR / "tdx_quote"
TEMPLATE_COLLATERAL = TDX_DIR / "tdx_quote_collateral.json"

#: A fixed verification time for re-signed artefacts (2027-01-15 08:00:00 UTC).
NOW = 1_800_000_000
SGX_EXT_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")

# v4 layout (research/dcap.md §3): absolute offsets.
HEADER_LEN = 48
BODY_LEN = 584
SIGNED_END = HEADER_LEN + BODY_LEN  # 632
BODY = {
    "td_attributes": (120, 8),
    "xfam": (128, 8),
    "mr_td": (136, 48),
    "mr_config_id": (184, 48),
    "mr_owner": (232, 48),
    "mr_owner_config": (280, 48),
    "rtmr0": (328, 48),
    "rtmr1": (376, 48),
    "rtmr2": (424, 48),
    "rtmr3": (472, 48),
    "report_data": (520, 64),
}
QE_REPORT_OFF = 770
QE_REPORT_LEN = 384
QE_AUTH_OFF = 1220
QE_AUTH_LEN = 32

TD_ATTR_DEBUG = 1 << 0


def _ts(t: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, tz=dt.UTC)


def _iso(t: int) -> str:
    return _ts(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def _raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _raw_pub(key: ec.EllipticCurvePrivateKey) -> bytes:
    pub = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return pub[1:]


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    serial: int,
    *,
    ca: bool,
    path_length: int | None = None,
    extra: list[x509.ExtensionType] | None = None,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_ts(NOW - 365 * 86400))
        .not_valid_after(_ts(NOW + 10 * 365 * 86400))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca, content_commitment=not ca, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for ext in extra or []:
        b = b.add_extension(ext, critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


@dataclass
class ResignPki:
    """A throwaway PKI shaped like Intel's. One instance = one "platform" (one PCK leaf)."""

    root_key: ec.EllipticCurvePrivateKey = field(default_factory=_new_key)
    pck_ca_key: ec.EllipticCurvePrivateKey = field(default_factory=_new_key)
    pck_key: ec.EllipticCurvePrivateKey = field(default_factory=_new_key)
    tcb_key: ec.EllipticCurvePrivateKey = field(default_factory=_new_key)
    attest_key: ec.EllipticCurvePrivateKey = field(default_factory=_new_key)
    pck_serial: int = 0x5EED_0001

    def __post_init__(self) -> None:
        self.template = TEMPLATE_QUOTE.read_bytes()
        self.template_collateral = json.loads(TEMPLATE_COLLATERAL.read_text())
        chain = self.template[1258 : 1258 + struct.unpack_from("<I", self.template, 1254)[0]]
        real_leaf = x509.load_pem_x509_certificates(chain.rstrip(b"\0"))[0]
        sgx_ext = real_leaf.extensions.get_extension_for_oid(SGX_EXT_OID).value
        assert isinstance(sgx_ext, x509.UnrecognizedExtension)
        root_name = _name("Intel SGX Root CA")
        ca_name = _name("Intel SGX PCK Platform CA")
        self.root = _cert(root_name, root_name, self.root_key, self.root_key, 1, ca=True)
        self.pck_ca = _cert(ca_name, root_name, self.pck_ca_key, self.root_key, 2, ca=True,
                            path_length=0)
        self.pck_leaf = _cert(_name("Intel SGX PCK Certificate"), ca_name, self.pck_key,
                              self.pck_ca_key, self.pck_serial, ca=False,
                              extra=[x509.UnrecognizedExtension(SGX_EXT_OID, sgx_ext.value)])
        self.tcb_cert = _cert(_name("Intel SGX TCB Signing"), root_name, self.tcb_key,
                              self.root_key, 3, ca=False)

    @property
    def root_der(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.DER)

    # ---------------------------------------------------------------- quote

    def quote(
        self,
        *,
        mr_td: bytes | None = None,
        report_data: bytes | None = None,
        td_attributes: int | None = None,
        rtmrs: dict[int, bytes] | None = None,
        mr_config_id: bytes | None = None,
    ) -> bytes:
        """A v4 quote from the template with the chosen body fields, validly re-signed."""
        q = bytearray(self.template[:SIGNED_END])
        patches: dict[str, bytes] = {}
        if mr_td is not None:
            patches["mr_td"] = mr_td
        if report_data is not None:
            patches["report_data"] = report_data
        if td_attributes is not None:
            patches["td_attributes"] = td_attributes.to_bytes(8, "little")
        if mr_config_id is not None:
            patches["mr_config_id"] = mr_config_id
        for i, v in (rtmrs or {}).items():
            patches[f"rtmr{i}"] = v
        for name, value in patches.items():
            off, size = BODY[name]
            assert len(value) == size, (name, len(value))
            q[HEADER_LEN + off : HEADER_LEN + off + size] = value
        signed = bytes(q)
        attest_pub = _raw_pub(self.attest_key)
        qe_auth = self.template[QE_AUTH_OFF : QE_AUTH_OFF + QE_AUTH_LEN]
        qe_report = bytearray(self.template[QE_REPORT_OFF : QE_REPORT_OFF + QE_REPORT_LEN])
        qe_report[320:352] = hashlib.sha256(attest_pub + qe_auth).digest()
        qe_report[352:384] = bytes(32)
        qe_report_sig = _raw_sig(self.pck_key, bytes(qe_report))
        pem = _pem(self.pck_leaf, self.pck_ca, self.root).encode() + b"\0"
        inner = struct.pack("<HI", 5, len(pem)) + pem
        cert_data = (
            bytes(qe_report) + qe_report_sig + struct.pack("<H", QE_AUTH_LEN) + qe_auth + inner
        )
        sig_data = (
            _raw_sig(self.attest_key, signed)
            + attest_pub
            + struct.pack("<HI", 6, len(cert_data))
            + cert_data
        )
        return signed + struct.pack("<I", len(sig_data)) + sig_data

    # ---------------------------------------------------------------- collateral

    def _crl(
        self, issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, revoked: list[int],
        this_update: int, next_update: int,
    ) -> bytes:
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.subject)
            .last_update(_ts(this_update))
            .next_update(_ts(next_update))
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                critical=False,
            )
        )
        for serial in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(_ts(this_update))
                .build()
            )
        return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def collateral(
        self,
        *,
        now: int = NOW,
        valid_for: int = 30 * 86400,
        tcb_status: str | None = None,
        advisories: tuple[str, ...] = (),
        tcb_date: int | None = None,
        revoke_pck: bool = False,
    ) -> str:
        """Collateral JSON for this PKI, issued a day before `now`, valid `valid_for` after that.

        `tcb_status` rewrites every platform TCB level's status (and adds `advisories`);
        `revoke_pck` lists the PCK leaf's serial in the PCK CRL.
        """
        issued = now - 86400
        expires = issued + valid_for
        tcb = json.loads(self.template_collateral["tcb_info"])
        tcb["issueDate"] = _iso(issued)
        tcb["nextUpdate"] = _iso(expires)
        if tcb_status is not None:
            for level in tcb["tcbLevels"]:
                level["tcbStatus"] = tcb_status
                if advisories:
                    level["advisoryIDs"] = list(advisories)
                if tcb_date is not None:
                    level["tcbDate"] = _iso(tcb_date)
        qe = json.loads(self.template_collateral["qe_identity"])
        qe["issueDate"] = _iso(issued)
        qe["nextUpdate"] = _iso(expires)
        tcb_text = json.dumps(tcb, separators=(",", ":"))
        qe_text = json.dumps(qe, separators=(",", ":"))
        root_crl = self._crl(self.root, self.root_key, [], issued, expires)
        pck_crl = self._crl(
            self.pck_ca, self.pck_ca_key, [self.pck_serial] if revoke_pck else [], issued, expires
        )
        tcb_chain = _pem(self.tcb_cert, self.root)
        return json.dumps(
            {
                "pck_crl_issuer_chain": _pem(self.pck_ca, self.root),
                "root_ca_crl": root_crl.hex(),
                "pck_crl": pck_crl.hex(),
                "tcb_info_issuer_chain": tcb_chain,
                "tcb_info": tcb_text,
                "tcb_info_signature": _raw_sig(self.tcb_key, tcb_text.encode()).hex(),
                "qe_identity_issuer_chain": tcb_chain,
                "qe_identity": qe_text,
                "qe_identity_signature": _raw_sig(self.tcb_key, qe_text.encode()).hex(),
            }
        )
