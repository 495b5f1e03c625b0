//! On-disk format numbers. Every container record (`containers/<id>.json`), pod record
//! (`pods/<id>.json`) and the image index with its layer metadata (`images/index.json`) carries
//! `"format": N`, written from a [`Format`] field. A file without the key was written before formats
//! were numbered (crust up to commit 020e570) and is format 0, whose fields format 1 kept as they were.
//! A file of a newer format than this crustd reads fails to load, and crustd refuses to start, saying
//! which file: state is never dropped silently.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The format of container records this crustd writes and the newest it reads.
pub const CONTAINER_RECORD: u32 = 1;
/// The format of pod records.
pub const POD_RECORD: u32 = 1;
/// The format of the image index.
pub const IMAGE_INDEX: u32 = 1;

/// A record's `format` key: written as `N`; read from any number up to `N` (0 when absent, with
/// `#[serde(default)]`); a larger one fails the whole record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Format<const N: u32>;

impl<const N: u32> Serialize for Format<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(N)
    }
}

impl<'de, const N: u32> Deserialize<'de> for Format<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if v > u64::from(N) {
            return Err(serde::de::Error::custom(format!(
                "format {v} is newer than the newest this crustd reads ({N}): a newer crust wrote it \
                 (downgrading crust is not supported)"
            )));
        }
        Ok(Format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Rec {
        #[serde(default)]
        format: Format<1>,
        id: String,
    }

    #[test]
    fn older_formats_are_read_and_newer_refused() {
        let old: Rec = serde_json::from_str(r#"{"id":"a"}"#).unwrap();
        assert_eq!(old.id, "a");
        let now: Rec = serde_json::from_str(r#"{"format":1,"id":"a"}"#).unwrap();
        assert_eq!(serde_json::to_string(&now).unwrap(), r#"{"format":1,"id":"a"}"#);
        let e = serde_json::from_str::<Rec>(r#"{"format":2,"id":"a"}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("format 2 is newer than the newest this crustd reads (1)"),
            "{e}"
        );
    }
}
