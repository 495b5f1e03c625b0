//! Request validation shared by the handlers: every refusal names the request field.

use crate::{Error, Result};

/// A required string field.
pub fn required<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        Err(Error::invalid(field, "must not be empty"))
    } else {
        Ok(value)
    }
}

/// A required message field.
pub fn present<'a, T>(field: &str, value: &'a Option<T>) -> Result<&'a T> {
    value.as_ref().ok_or_else(|| Error::invalid(field, "must be set"))
}

/// A DNS label (RFC 1123): 1–63 characters of [a-z0-9-], alphanumeric at both ends.
pub fn dns_label(field: &str, value: &str) -> Result<()> {
    required(field, value)?;
    if value.len() > 63 {
        return Err(Error::invalid(
            field,
            format!("{value:?} is longer than 63 characters"),
        ));
    }
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = !value.starts_with('-') && !value.ends_with('-');
    if !ok_chars || !ok_ends {
        return Err(Error::invalid(
            field,
            format!("{value:?} is not a DNS label (a-z, 0-9 and '-')"),
        ));
    }
    Ok(())
}

/// A non-negative timeout in seconds.
pub fn non_negative(field: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::invalid(field, format!("must not be negative, got {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        dns_label("f", "web-1").unwrap();
        assert!(dns_label("f", "").is_err());
        assert!(dns_label("f", "-a").is_err());
        assert!(dns_label("f", "Ab").is_err());
        let e = dns_label("metadata.name", &"a".repeat(64)).unwrap_err();
        assert!(e.to_string().starts_with("metadata.name:"), "{e}");
    }
}
