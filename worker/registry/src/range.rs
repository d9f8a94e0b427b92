//! Byte ranges: the `Range` header of blob reads (RFC 9110, one range) and the `Content-Range`
//! header of chunked uploads (the spec's `<start>-<end>`, plus the RFC form clients also send).

/// An inclusive byte range `[start, end]`, already checked against the object size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What a `Range` request header asks for, given the size of the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve the whole blob (also for syntax we don't understand, as RFC 9110
    /// tells servers to ignore such headers).
    Whole,
    Partial(ByteRange),
    /// Syntactically fine but outside the blob: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value for an object of `size` bytes.
pub fn parse_range(header: &str, size: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        // Multiple ranges would need multipart/byteranges; serving the whole blob is allowed.
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        let Ok(suffix) = last.parse::<u64>() else {
            return RangeRequest::Whole;
        };
        if suffix == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        let start = size.saturating_sub(suffix);
        return RangeRequest::Partial(ByteRange {
            start,
            end: size - 1,
        });
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeRequest::Whole;
    };
    let end = if last.is_empty() {
        None
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => Some(end),
            // `500-0`: the conformance suite (and Distribution) answer 416, not the whole blob.
            Ok(_) => return RangeRequest::Unsatisfiable,
            Err(_) => return RangeRequest::Whole,
        }
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    let end = end.map_or(size - 1, |e| e.min(size - 1));
    RangeRequest::Partial(ByteRange { start, end })
}

/// Parses an upload chunk's `Content-Range`: `<start>-<end>` as the spec writes it, or the RFC
/// forms `bytes <start>-<end>/<total|*>` and `bytes=<start>-<end>`. Returns `(start, end)`.
pub fn parse_content_range(header: &str) -> Option<(u64, u64)> {
    let text = header.trim();
    let text = text
        .strip_prefix("bytes=")
        .or_else(|| text.strip_prefix("bytes "))
        .unwrap_or(text);
    let text = text.split_once('/').map_or(text, |(range, _total)| range);
    let (start, end) = text.trim().split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = end.trim().parse().ok()?;
    (end >= start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Partial(ByteRange { start, end })
    }

    #[test]
    fn blob_ranges_are_clamped_to_the_blob() {
        assert_eq!(parse_range("bytes=0-9", 100), partial(0, 9));
        assert_eq!(parse_range("bytes=90-200", 100), partial(90, 99));
        assert_eq!(parse_range("bytes=10-", 100), partial(10, 99));
        assert_eq!(parse_range("bytes=-10", 100), partial(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), partial(0, 99));
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        assert_eq!(parse_range("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=500-0", 1000),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range("bytes=5000-10000", 1000),
            RangeRequest::Unsatisfiable
        );
    }

    #[test]
    fn unintelligible_ranges_mean_the_whole_blob() {
        for header in ["items=0-1", "bytes=a-b", "bytes=0-1,3-4", "bytes"] {
            assert_eq!(parse_range(header, 100), RangeRequest::Whole, "{header}");
        }
    }

    #[test]
    fn upload_content_ranges_accept_the_spec_and_rfc_forms() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes=5-5"), Some((5, 5)));
        assert_eq!(parse_content_range("9-3"), None);
        assert_eq!(parse_content_range("x-y"), None);
        assert_eq!(parse_content_range(""), None);
    }
}
