//! Lenient deserializers for configuration values. Figment hands env values and unquoted YAML over
//! typed (`123`, `true`), and pycti-style settings spell booleans `yes`/`no`/`True`: these accept
//! every such spelling where the field wants a string or a boolean.

use serde::{Deserialize, Deserializer};

/// A scalar as it may arrive from YAML or env.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Scalar {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl Scalar {
    /// The value as text, whatever type it arrived as.
    pub(crate) fn into_string(self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::UInt(u) => u.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Text(s) => s,
        }
    }
}

/// True for the spellings of "off" (`no`, `false`, `none`, `off`, `0`), any case.
pub(crate) fn words_off(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "no" | "false" | "none" | "off" | "0"
    )
}

/// True for the spellings of "on" (`yes`, `true`, `now`, `on`), any case.
pub(crate) fn words_on(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "yes" | "true" | "now" | "on"
    )
}

/// An optional string that also accepts numbers and booleans (an env value `1700000000000` or
/// `false` reaches us typed, YAML reads `first_run_at: 0200` as a number); an empty string is
/// "unset", as in pycti.
pub(crate) fn lenient_opt_string<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    let v: Option<Scalar> = Option::deserialize(d)?;
    Ok(v.map(Scalar::into_string).filter(|s| !s.trim().is_empty()))
}

fn to_bool<E: serde::de::Error>(v: Scalar) -> Result<bool, E> {
    match v {
        Scalar::Bool(b) => Ok(b),
        Scalar::Int(i) => Ok(i != 0),
        Scalar::UInt(u) => Ok(u != 0),
        Scalar::Text(s) if words_on(&s) || s.trim() == "1" => Ok(true),
        Scalar::Text(s) if words_off(&s) => Ok(false),
        other => Err(E::custom(format!(
            "expected a boolean (true/false/yes/no), got `{}`",
            other.into_string()
        ))),
    }
}

/// A boolean that also accepts pycti's spellings (`yes`, `no`, `True`, `False`).
pub(crate) fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    to_bool(Scalar::deserialize(d)?)
}

/// An optional boolean, as [`lenient_bool`].
pub(crate) fn lenient_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v: Option<Scalar> = Option::deserialize(d)?;
    v.map(to_bool).transpose()
}
