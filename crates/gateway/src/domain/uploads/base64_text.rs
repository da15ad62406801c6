//! Base64 uploads (seed 001's `/api/upload/base64`): a data URL or bare base64, decoded in
//! chunks as storage takes them, so the decoded file never exists whole in memory next to
//! its text.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use futures::Stream;

use crate::domain::DomainError;

/// Characters of base64 decoded per chunk (a multiple of 4): 48 KiB of file.
const CHUNK_CHARS: usize = 64 * 1024;

const ENGINE: GeneralPurpose =
    GeneralPurpose::new(&alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

/// The base64 text of `value`: after `data:<type>;base64,` when it is a data URL, else all of
/// it. A data URL without `;base64` is refused (its text is not base64).
pub fn payload<'a>(value: &'a str, field: &'static str) -> Result<&'a str, DomainError> {
    let value = value.trim();
    if let Some(rest) = value.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or_else(|| DomainError::invalid(field, "a data URL needs a comma before its data"))?;
        if !meta.split(';').any(|p| p.eq_ignore_ascii_case("base64")) {
            return Err(DomainError::invalid(field, "only base64 data URLs are accepted (data:image/png;base64,...)"));
        }
        return Ok(data);
    }
    Ok(value)
}

/// Upper bound of the decoded size of `text` (whitespace counted), for early refusals.
pub fn decoded_len_bound(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4) * 3
}

/// Decodes `text` chunk by chunk; ASCII whitespace (line breaks of MIME base64) is skipped.
/// A bad character or a dangling final group is an `Invalid` error on `field`.
pub fn decode_chunks<'a>(text: &'a str, field: &'static str) -> impl Stream<Item = Result<Bytes, DomainError>> + Unpin + Send + 'a {
    let mut rest = text.as_bytes();
    let mut buf = Vec::with_capacity(CHUNK_CHARS);
    let mut failed = false;
    futures::stream::iter(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        buf.clear();
        let mut taken = 0;
        for &b in rest {
            taken += 1;
            if !b.is_ascii_whitespace() {
                buf.push(b);
                if buf.len() == CHUNK_CHARS {
                    break;
                }
            }
        }
        rest = &rest[taken..];
        if buf.is_empty() {
            return None;
        }
        match ENGINE.decode(&buf) {
            Ok(d) => Some(Ok(Bytes::from(d))),
            Err(e) => {
                failed = true;
                Some(Err(DomainError::invalid(field, format!("not valid base64: {e}"))))
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    async fn decode(text: &str) -> Result<Vec<u8>, DomainError> {
        let mut out = Vec::new();
        let mut s = decode_chunks(text, "image");
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn decodes_in_chunks_like_at_once() {
        let data: Vec<u8> = (0..200_000u32).map(|n| (n * 31 % 251) as u8).collect();
        let text = base64::engine::general_purpose::STANDARD.encode(&data);
        assert_eq!(decode(&text).await.unwrap(), data);
        // MIME-style line breaks and no padding.
        let wrapped: String = text.as_bytes().chunks(76).map(|l| format!("{}\r\n", std::str::from_utf8(l).unwrap())).collect();
        assert_eq!(decode(&wrapped).await.unwrap(), data);
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&data[..10]);
        assert_eq!(decode(&unpadded).await.unwrap(), &data[..10]);
    }

    #[tokio::test]
    async fn bad_base64_is_a_field_error() {
        for bad in ["abc!", "abcde", "@@@@"] {
            assert!(matches!(decode(bad).await, Err(DomainError::Invalid { field: "image", .. })), "{bad}");
        }
        assert!(decode("").await.unwrap().is_empty());
    }

    #[test]
    fn data_urls() {
        assert_eq!(payload("data:image/png;base64,QUJD", "image").unwrap(), "QUJD");
        assert_eq!(payload("  QUJD \n", "image").unwrap(), "QUJD");
        assert!(payload("data:text/plain,hello", "image").is_err());
        assert!(payload("data:image/png;base64", "image").is_err());
        assert_eq!(decoded_len_bound("QUJD"), 3);
    }
}
