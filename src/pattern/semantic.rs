//! The reference validator's semantic check on hash values: a value compared with a known hash
//! algorithm key (any object, `…hashes….<ALGO>`) must have that algorithm's form.
//!
//! Like `stix2-patterns`, the check applies when some path component is `hashes` and the last
//! component is a key whose name, upper-cased without `-` and `'`, is a known algorithm; it covers
//! every operator except `EXISTS` (so `LIKE 'abc%'` on an MD5 is invalid, as in the reference).
//! One deliberate difference: the reference compares the text of an `IN (…)` set as a whole and so
//! rejects every `IN` on a hash; here each member is checked, so `IN ('<md5>', '<md5>')` is valid.

use super::ast::{Literal, LiteralValue, ObjectPath, PathStep, Test};
use super::error::PErr;
use crate::ioc::hex_digits;

/// The hash algorithms whose values the reference validator checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HashAlgo {
    Md5,
    Md6,
    Ripemd160,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Sha3_224,
    Sha3_256,
    Sha3_384,
    Sha3_512,
    Ssdeep,
    Whirlpool,
}

impl HashAlgo {
    /// Recognises a hash key the way the reference does: ASCII case-insensitive, ignoring `-` and
    /// `'` (`SHA-256`, `sha256`, `Sha-256` are one key). Does not allocate.
    pub(crate) fn from_key(key: &str) -> Option<HashAlgo> {
        let mut buf = [0u8; 12];
        let mut len = 0;
        for b in key.bytes() {
            if b == b'-' || b == b'\'' {
                continue;
            }
            if len == buf.len() || !b.is_ascii() {
                return None;
            }
            buf[len] = b.to_ascii_uppercase();
            len += 1;
        }
        Some(match &buf[..len] {
            b"MD5" => HashAlgo::Md5,
            b"MD6" => HashAlgo::Md6,
            b"RIPEMD160" => HashAlgo::Ripemd160,
            b"SHA1" => HashAlgo::Sha1,
            b"SHA224" => HashAlgo::Sha224,
            b"SHA256" => HashAlgo::Sha256,
            b"SHA384" => HashAlgo::Sha384,
            b"SHA512" => HashAlgo::Sha512,
            b"SHA3224" => HashAlgo::Sha3_224,
            b"SHA3256" => HashAlgo::Sha3_256,
            b"SHA3384" => HashAlgo::Sha3_384,
            b"SHA3512" => HashAlgo::Sha3_512,
            b"SSDEEP" => HashAlgo::Ssdeep,
            b"WHIRLPOOL" => HashAlgo::Whirlpool,
            _ => return None,
        })
    }

    /// Whether `value` has this algorithm's form.
    pub(crate) fn accepts(self, value: &str) -> bool {
        let hex_len = |lens: &[usize]| lens.contains(&value.len()) && hex_digits(value).0;
        match self {
            HashAlgo::Md5 => hex_len(&[32]),
            // The reference's MD6 regex is broken (it accepts anything starting with 32 hex
            // digits); this checks what it was meant to.
            HashAlgo::Md6 => hex_len(&[32, 40, 56, 64, 96, 128]),
            HashAlgo::Ripemd160 | HashAlgo::Sha1 => hex_len(&[40]),
            HashAlgo::Sha224 | HashAlgo::Sha3_224 => hex_len(&[56]),
            HashAlgo::Sha256 | HashAlgo::Sha3_256 => hex_len(&[64]),
            HashAlgo::Sha384 | HashAlgo::Sha3_384 => hex_len(&[96]),
            HashAlgo::Sha512 | HashAlgo::Sha3_512 | HashAlgo::Whirlpool => hex_len(&[128]),
            HashAlgo::Ssdeep => {
                (1..=128).contains(&value.len())
                    && value.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+' | b':' | b'.')
                    })
            }
        }
    }
}

/// The hash algorithm a path designates for the reference check, if any.
fn checked_algo<'p>(path: &'p ObjectPath<'_>) -> Option<(HashAlgo, &'p str)> {
    let has_hashes = path.property == "hashes"
        || path
            .steps
            .iter()
            .any(|s| matches!(s, PathStep::Key(k) if k == "hashes"));
    if !has_hashes {
        return None;
    }
    let last: &str = match path.steps.last() {
        None => &path.property,
        Some(PathStep::Key(k)) => k,
        // An index as the last step selects no algorithm.
        Some(PathStep::Index(_) | PathStep::AnyIndex) => return None,
    };
    HashAlgo::from_key(last).map(|algo| (algo, last))
}

/// Checks one literal against the algorithm; the error points at the literal.
fn check_literal(
    algo: HashAlgo,
    key: &str,
    lit: &Literal<'_>,
    input_len: usize,
) -> Result<(), PErr> {
    let ok = match &lit.value {
        LiteralValue::Str(s) => algo.accepts(s),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let mut shown = lit.to_string();
    if shown.len() > 80 {
        let mut cut = 77;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        shown.push_str("...");
    }
    Err(PErr {
        rest_len: input_len.saturating_sub(lit.span.start),
        message: format!("{shown} is not a valid {key} hash").into(),
    })
}

/// Runs the hash check on one test.
pub(crate) fn check_test(test: &Test<'_>, input_len: usize) -> Result<(), PErr> {
    let Some((algo, key)) = checked_algo(test.path()) else {
        return Ok(());
    };
    match test {
        Test::Compare { value, .. } | Test::StringMatch { value, .. } => {
            check_literal(algo, key, value, input_len)
        }
        Test::In { set, .. } => set
            .iter()
            .try_for_each(|lit| check_literal(algo, key, lit, input_len)),
        Test::Exists { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_normalise_like_the_reference() {
        for key in ["SHA-256", "sha256", "Sha-256", "SHA256", "S-H-A-2-5-6"] {
            assert_eq!(HashAlgo::from_key(key), Some(HashAlgo::Sha256), "{key}");
        }
        assert_eq!(HashAlgo::from_key("SHA3-512"), Some(HashAlgo::Sha3_512));
        assert_eq!(HashAlgo::from_key("TLSH"), None);
        assert_eq!(HashAlgo::from_key("SHA_256"), None);
        assert_eq!(HashAlgo::from_key("a-very-long-key-name"), None);
    }

    #[test]
    fn forms() {
        assert!(HashAlgo::Md5.accepts("d41d8cd98f00b204e9800998ecf8427E"));
        assert!(!HashAlgo::Md5.accepts("d41d8cd98f00b204e9800998ecf8427"));
        assert!(!HashAlgo::Md5.accepts("g41d8cd98f00b204e9800998ecf8427e"));
        assert!(HashAlgo::Ssdeep.accepts("3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C"));
        assert!(!HashAlgo::Ssdeep.accepts(""));
    }
}
