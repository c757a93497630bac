//! The one error type of the crate: every way a request can be refused,
//! each mapped to the status code the worker answers with.

/// Why a request was refused. `Copy` and allocation-free so the hot path can
/// return it cheaply; the `&'static str` in [`HttpError::BadRequest`] is only
/// for the log, never sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// 400: malformed or ambiguous request (the reason names the rule broken).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// 431: head bigger than `Limits::max_head`, a field line over
    /// `Limits::max_field_size`, too many fields, or a trailer section over 8 KiB.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// 414: request line longer than `Limits::max_request_line`.
    #[error("request line too long")]
    UriTooLong,
    /// 413: Content-Length or decoded chunked size above `Limits::max_body`.
    #[error("request body too large")]
    BodyTooLarge,
    /// 501: a transfer coding other than `chunked`.
    #[error("transfer coding not implemented")]
    NotImplemented,
    /// 505: an HTTP version other than 1.0 and 1.1 (including the HTTP/2 preface).
    #[error("HTTP version not supported")]
    VersionNotSupported,
    /// 403: a PROXY protocol header from a peer not in `--proxy-allow-from`.
    #[error("PROXY header from a peer that is not allowed to send one")]
    ProxyForbidden,
}

impl HttpError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::HeadersTooLarge => 431,
            HttpError::UriTooLong => 414,
            HttpError::BodyTooLarge => 413,
            HttpError::NotImplemented => 501,
            HttpError::VersionNotSupported => 505,
            HttpError::ProxyForbidden => 403,
        }
    }

    /// The reason phrase for the status line (RFC 9110 §15).
    pub fn reason(self) -> &'static str {
        match self {
            HttpError::BadRequest(_) => "Bad Request",
            HttpError::HeadersTooLarge => "Request Header Fields Too Large",
            HttpError::UriTooLong => "URI Too Long",
            HttpError::BodyTooLarge => "Content Too Large",
            HttpError::NotImplemented => "Not Implemented",
            HttpError::VersionNotSupported => "HTTP Version Not Supported",
            HttpError::ProxyForbidden => "Forbidden",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HttpError::{self, *};

    #[test]
    fn status_and_reason() {
        let cases: &[(HttpError, u16, &str)] = &[
            (BadRequest("x"), 400, "Bad Request"),
            (HeadersTooLarge, 431, "Request Header Fields Too Large"),
            (UriTooLong, 414, "URI Too Long"),
            // RFC 9110 §15.5.14 renamed "Payload Too Large" to "Content Too Large".
            (BodyTooLarge, 413, "Content Too Large"),
            (NotImplemented, 501, "Not Implemented"),
            (VersionNotSupported, 505, "HTTP Version Not Supported"),
        ];
        for &(err, status, reason) in cases {
            assert_eq!(err.status(), status, "{err:?}");
            assert_eq!(err.reason(), reason, "{err:?}");
        }
    }

    #[test]
    fn display_carries_the_log_reason() {
        assert_eq!(
            BadRequest("missing or duplicate Host").to_string(),
            "bad request: missing or duplicate Host"
        );
    }
}
