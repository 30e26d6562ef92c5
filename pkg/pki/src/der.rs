//! Just enough DER to write a subject with several `O` attributes and re-sign a certificate.
//!
//! Why: Kubernetes reads a client certificate's groups from its `O` attributes, and a user may
//! be in several groups. rcgen 0.13 keeps a distinguished name as a map, so it can hold only
//! one `O`. We let rcgen build the certificate, swap in a subject we encode ourselves, and sign
//! the new TBSCertificate with the CA key. Only single-byte tags are supported, which is all an
//! X.509 certificate's top-level structure uses.

use ring::rand::SystemRandom;
use ring::signature::EcdsaKeyPair;

/// OID 2.5.4.3 (commonName), DER content bytes.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// OID 2.5.4.10 (organizationName), DER content bytes.
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_UTF8: u8 = 0x0c;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_VERSION: u8 = 0xa0;

/// One parsed element: its tag, its whole encoding and its content.
struct Tlv<'a> {
    tag: u8,
    raw: &'a [u8],
}

/// Splits the first element off `input`.
fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *input.first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tag: not used at the levels we parse
    }
    let first_len = *input.get(1)?;
    let (len, header) = if first_len < 0x80 {
        (usize::from(first_len), 2)
    } else {
        let n = usize::from(first_len & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in input.get(2..2 + n)? {
            len = (len << 8) | usize::from(*b);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let raw = input.get(..end)?;
    Some((Tlv { tag, raw }, &input[end..]))
}

/// Content of an element (everything after tag and length).
fn content<'a>(tlv: &Tlv<'a>) -> Option<&'a [u8]> {
    let first_len = *tlv.raw.get(1)?;
    let header = if first_len < 0x80 {
        2
    } else {
        2 + usize::from(first_len & 0x7f)
    };
    tlv.raw.get(header..)
}

/// Encodes one element.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn attribute(oid: &[u8], value: &str) -> Vec<u8> {
    let mut atv = tlv(TAG_OID, oid);
    atv.extend(tlv(TAG_UTF8, value.as_bytes()));
    tlv(TAG_SET, &tlv(TAG_SEQUENCE, &atv))
}

/// Encodes a Name as `O=<each org>, CN=<cn>`, the order Go's `pkix.Name` writes, one attribute
/// per RDN, all as UTF8String.
pub(crate) fn encode_name(common_name: &str, organizations: &[String]) -> Vec<u8> {
    let mut rdns = Vec::new();
    for org in organizations {
        rdns.extend(attribute(OID_O, org));
    }
    rdns.extend(attribute(OID_CN, common_name));
    tlv(TAG_SEQUENCE, &rdns)
}

/// Replaces the subject of `cert_der` with `subject_der` and signs the result with `signer`
/// (ECDSA P-256 with SHA-256, the algorithm rcgen already named in the certificate because the
/// CA key is P-256).
pub(crate) fn replace_subject_and_sign(
    cert_der: &[u8],
    subject_der: &[u8],
    signer: &EcdsaKeyPair,
) -> Result<Vec<u8>, &'static str> {
    let (cert, _) = read_tlv(cert_der).ok_or("certificate is not DER")?;
    let cert_content = content(&cert).ok_or("certificate is not DER")?;
    let (tbs, rest) = read_tlv(cert_content).ok_or("no TBSCertificate")?;
    let (sig_alg, _) = read_tlv(rest).ok_or("no signature algorithm")?;
    if tbs.tag != TAG_SEQUENCE || sig_alg.tag != TAG_SEQUENCE {
        return Err("unexpected certificate structure");
    }

    let mut elements = Vec::new();
    let mut cursor = content(&tbs).ok_or("TBSCertificate is not DER")?;
    while !cursor.is_empty() {
        let (el, next) = read_tlv(cursor).ok_or("TBSCertificate element is not DER")?;
        elements.push(el.raw);
        cursor = next;
    }
    // version [0], serial, signature, issuer, validity, subject, ...
    let subject_index = if elements.first().and_then(|e| e.first()) == Some(&TAG_VERSION) {
        5
    } else {
        4
    };
    let slot = elements
        .get_mut(subject_index)
        .ok_or("TBSCertificate has no subject")?;
    *slot = subject_der;
    let new_tbs = tlv(TAG_SEQUENCE, &elements.concat());

    let sig = signer
        .sign(&SystemRandom::new(), &new_tbs)
        .map_err(|_| "ECDSA signing failed")?;
    let mut bits = vec![0u8]; // no unused bits
    bits.extend_from_slice(sig.as_ref());

    let mut body = new_tbs;
    body.extend_from_slice(sig_alg.raw);
    body.extend(tlv(TAG_BIT_STRING, &bits));
    Ok(tlv(TAG_SEQUENCE, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let data = vec![7u8; len];
            let enc = tlv(TAG_SEQUENCE, &data);
            let (el, rest) = read_tlv(&enc).expect("parses");
            assert!(rest.is_empty());
            assert_eq!(content(&el).expect("content"), &data[..]);
        }
    }

    #[test]
    fn truncated_input_is_rejected() {
        let enc = tlv(TAG_SEQUENCE, &[1, 2, 3]);
        assert!(read_tlv(&enc[..enc.len() - 1]).is_none());
        assert!(read_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(read_tlv(&[]).is_none());
    }
}
