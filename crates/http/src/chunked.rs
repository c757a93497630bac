//! The chunked transfer coding of a request body (RFC 9112 §7.1).
//!
//! [`ChunkedDecoder`] is a byte-at-a-time state machine (chunk data is copied
//! in bulk), so it gives the same answer however the body was split across
//! reads, and it stops exactly at the end of the body: whatever follows is the
//! next pipelined request. `httparse::parse_chunk_size` is not used because
//! it accepts whitespace after the size and does not validate extensions.

use crate::error::HttpError;
use crate::head::{has_ctl, is_tchar, trim_ows};

/// Longest chunk header line (size plus extensions). Extensions carry nothing
/// we use, so this only stops a client from streaming an endless one.
const MAX_CHUNK_HEADER: usize = 4096;

/// Largest trailer section, counting every byte through the final CRLF.
const MAX_TRAILER: usize = 8 * 1024;

/// At most 16 hex digits, so the size always fits in a u64.
const MAX_SIZE_DIGITS: u8 = 16;

const BAD_SIZE: HttpError = HttpError::BadRequest("invalid chunk size");
const BAD_EXT: HttpError = HttpError::BadRequest("invalid chunk extension");

/// Where the decoder is inside the chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Reading chunk-size hex digits.
    #[default]
    Size,
    /// BWS after the size; only a `;` may end it.
    SizeWs,
    /// After `;`, before the extension name.
    ExtPreName,
    ExtName,
    /// BWS after a name; `=` or `;` must follow.
    ExtPostName,
    /// After `=`, before the value.
    ExtPreValue,
    ExtToken,
    ExtQuoted,
    /// After a backslash inside a quoted-string.
    ExtQuotedPair,
    /// Just after the closing quote.
    ExtAfterQuote,
    /// BWS after a value; `;` must follow.
    ExtPostValue,
    /// Saw the CR ending the chunk header line.
    SizeLf,
    /// Copying chunk data.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// Inside a trailer field line (or the empty line ending the section).
    Trailer,
    /// Saw the CR ending a trailer line.
    TrailerLf,
    /// The final CRLF has been consumed.
    Done,
}

/// Result of one [`ChunkedDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStatus {
    /// All input was consumed and the body is not finished.
    NeedMore,
    /// The body (and its trailer section) is finished.
    Done,
}

/// Incremental decoder of a chunked request body (RFC 9112 §7.1). Feed it
/// input slices; it appends decoded data to `out` and says how much input it
/// consumed.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the chunk being read, then bytes of it still to copy.
    size: u64,
    digits: u8,
    /// Bytes of the current chunk header line.
    header_len: usize,
    /// Decoded bytes so far, against `max_body`.
    total: u64,
    max_body: u64,
    /// The trailer line being collected.
    line: Vec<u8>,
    trailer_len: usize,
    trailers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Once refused, always refused: the stream position is lost.
    failed: Option<HttpError>,
}

impl Default for ChunkedDecoder {
    /// A decoder without a body size limit.
    fn default() -> Self {
        Self::new(u64::MAX)
    }
}

impl ChunkedDecoder {
    /// A decoder that refuses bodies decoding to more than `max_body` bytes.
    pub fn new(max_body: u64) -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            digits: 0,
            header_len: 0,
            total: 0,
            max_body,
            line: Vec::new(),
            trailer_len: 0,
            trailers: Vec::new(),
            failed: None,
        }
    }

    /// Decode from `input`, appending chunk data to `out`.
    ///
    /// Returns (bytes of `input` consumed, status). On `Done`, consumed
    /// points just past the final CRLF after the trailer section, so the
    /// remaining bytes belong to the next (pipelined) request. On
    /// `NeedMore` all of `input` was consumed.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, ChunkStatus), HttpError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        let mut pos = 0;
        while pos < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let n = (input.len() - pos).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[pos..pos + n]);
                pos += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = input[pos];
            pos += 1;
            if let Err(err) = self.step(b) {
                self.failed = Some(err);
                return Err(err);
            }
        }
        let status = if self.state == State::Done {
            ChunkStatus::Done
        } else {
            ChunkStatus::NeedMore
        };
        Ok((pos, status))
    }

    /// Whether the final CRLF has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Parsed trailer fields, in wire order, values trimmed of SP/HTAB. They
    /// are kept apart and never merged into the head (RFC 9110 §6.5.1).
    pub fn trailers(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.trailers
    }

    /// Advance by one byte (any state but `Data` and `Done`).
    fn step(&mut self, b: u8) -> Result<(), HttpError> {
        use State::*;
        if matches!(
            self.state,
            Size | SizeWs
                | ExtPreName
                | ExtName
                | ExtPostName
                | ExtPreValue
                | ExtToken
                | ExtQuoted
                | ExtQuotedPair
                | ExtAfterQuote
                | ExtPostValue
        ) {
            self.header_len += 1;
            if self.header_len > MAX_CHUNK_HEADER {
                return Err(HttpError::BadRequest("chunk header line too long"));
            }
        }
        let ws = b == b' ' || b == b'\t';
        self.state = match (self.state, b) {
            // chunk-size = 1*HEXDIG (§7.1): no sign, no leading space.
            (Size, _) if b.is_ascii_hexdigit() => {
                if self.digits == MAX_SIZE_DIGITS {
                    return Err(BAD_SIZE);
                }
                self.digits += 1;
                // Cannot overflow: at most 16 digits of 4 bits each.
                self.size = self.size << 4 | u64::from(hex_value(b));
                Size
            }
            (Size, _) if self.digits == 0 => return Err(BAD_SIZE),
            (Size, b'\r') => SizeLf,
            (Size, b';') => ExtPreName,
            // §7.1.1: BWS is allowed before ";", and nowhere else after the
            // size, so "0 \r\n" is refused.
            (Size, _) if ws => SizeWs,
            (Size, _) => return Err(BAD_SIZE),
            (SizeWs, _) if ws => SizeWs,
            (SizeWs, b';') => ExtPreName,
            (SizeWs, _) => return Err(BAD_SIZE),

            // chunk-ext = *( BWS ";" BWS chunk-ext-name
            //                [ BWS "=" BWS chunk-ext-val ] )   (§7.1.1)
            (ExtPreName, _) if ws => ExtPreName,
            (ExtPreName, _) if is_tchar(b) => ExtName,
            (ExtName, _) if is_tchar(b) => ExtName,
            (ExtName, _) if ws => ExtPostName,
            (ExtName | ExtPostName, b'=') => ExtPreValue,
            (ExtName | ExtToken | ExtAfterQuote | ExtPostName | ExtPostValue, b';') => ExtPreName,
            (ExtName | ExtToken | ExtAfterQuote, b'\r') => SizeLf,
            (ExtPostName, _) if ws => ExtPostName,
            // chunk-ext-val = token / quoted-string
            (ExtPreValue, _) if ws => ExtPreValue,
            (ExtPreValue, _) if is_tchar(b) => ExtToken,
            (ExtPreValue, b'"') => ExtQuoted,
            (ExtToken, _) if is_tchar(b) => ExtToken,
            (ExtToken | ExtAfterQuote | ExtPostValue, _) if ws => ExtPostValue,
            // RFC 9110 §5.6.4 quoted-string.
            (ExtQuoted, b'"') => ExtAfterQuote,
            (ExtQuoted, b'\\') => ExtQuotedPair,
            (ExtQuoted, _) if is_qdtext(b) => ExtQuoted,
            (ExtQuotedPair, _) if ws || (0x21..=0x7e).contains(&b) || b >= 0x80 => ExtQuoted,
            (
                ExtPreName | ExtName | ExtPostName | ExtPreValue | ExtToken | ExtQuoted
                | ExtQuotedPair | ExtAfterQuote | ExtPostValue,
                _,
            ) => return Err(BAD_EXT),

            (SizeLf, b'\n') => self.start_chunk()?,
            (SizeLf, _) => return Err(HttpError::BadRequest("bare CR in chunk header")),

            // §7.1: chunk-data is followed by exactly CRLF.
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size,
            (DataCr | DataLf, _) => {
                return Err(HttpError::BadRequest("chunk data not followed by CRLF"))
            }

            (Trailer | TrailerLf, _) => {
                self.trailer_len += 1;
                if self.trailer_len > MAX_TRAILER {
                    return Err(HttpError::HeadersTooLarge);
                }
                match (self.state, b) {
                    (Trailer, b'\r') => TrailerLf,
                    (Trailer, b'\n') => return Err(HttpError::BadRequest("bare LF in trailer")),
                    (Trailer, _) => {
                        self.line.push(b);
                        Trailer
                    }
                    (_, b'\n') if self.line.is_empty() => Done,
                    (_, b'\n') => {
                        self.finish_trailer_line()?;
                        Trailer
                    }
                    _ => return Err(HttpError::BadRequest("bare CR in trailer")),
                }
            }
            (Data | Done, _) => unreachable!("decode() never steps in {:?}", self.state),
        };
        Ok(())
    }

    /// The chunk header line is complete: start its data, or the trailer
    /// section after the last chunk.
    fn start_chunk(&mut self) -> Result<State, HttpError> {
        let size = self.size;
        self.digits = 0;
        self.header_len = 0;
        if size == 0 {
            return Ok(State::Trailer);
        }
        // Refuse as soon as the declared size is too big, before buffering it.
        self.total = self
            .total
            .checked_add(size)
            .filter(|&t| t <= self.max_body)
            .ok_or(HttpError::BodyTooLarge)?;
        Ok(State::Data)
    }

    /// Validate one trailer field line with the header rules and keep it.
    fn finish_trailer_line(&mut self) -> Result<(), HttpError> {
        let line = std::mem::take(&mut self.line);
        // RFC 9112 §5.2: no obs-fold, in trailers either.
        if matches!(line[0], b' ' | b'\t') {
            return Err(HttpError::BadRequest("obsolete line folding"));
        }
        let colon = line.iter().position(|&b| b == b':');
        let Some(colon) = colon.filter(|&c| c > 0 && line[..c].iter().all(|&b| is_tchar(b))) else {
            return Err(HttpError::BadRequest("invalid trailer name"));
        };
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if has_ctl(value) {
            return Err(HttpError::BadRequest("control character in trailer value"));
        }
        // RFC 9110 §6.5.1: framing and routing fields must not come from
        // trailers. We never merge trailers, but a field that could only
        // mean an attempt to reframe or reroute is refused outright.
        const FORBIDDEN: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"host"];
        if FORBIDDEN.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            return Err(HttpError::BadRequest("forbidden trailer field"));
        }
        self.trailers.push((name.to_vec(), value.to_vec()));
        self.line = line;
        self.line.clear();
        Ok(())
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// RFC 9110 §5.6.4: qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use HttpError::*;

    /// Decode `input` whole, then one byte at a time, and check both agree.
    /// Returns (decoded body, consumed, done) or the error.
    fn decode(input: &[u8], max_body: u64) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut dec = ChunkedDecoder::new(max_body);
        let mut out = Vec::new();
        let whole = dec
            .decode(input, &mut out)
            .map(|(n, s)| (out, n, s == ChunkStatus::Done));

        let mut dec = ChunkedDecoder::new(max_body);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut bytewise = Ok(false);
        for i in 0..input.len() {
            match dec.decode(&input[i..i + 1], &mut out) {
                Ok((n, ChunkStatus::Done)) => {
                    consumed += n;
                    bytewise = Ok(true);
                    break;
                }
                Ok((n, ChunkStatus::NeedMore)) => consumed += n,
                Err(e) => {
                    bytewise = Err(e);
                    break;
                }
            }
        }
        let bytewise = bytewise.map(|done| (out, consumed, done));
        assert_eq!(whole, bytewise, "whole vs byte-by-byte for {input:?}");
        whole
    }

    #[rustfmt::skip]
    #[test]
    fn accepted_bodies() {
        let cases: &[(&str, &[u8], &[u8], usize)] = &[
            // (what it guards, input, body, consumed)
            ("one chunk", b"5\r\nhello\r\n0\r\n\r\n", b"hello", 15),
            ("stops at the end of the body", b"5\r\nhello\r\n0\r\n\r\nGET /", b"hello", 15),
            ("no data at all", b"0\r\n\r\n", b"", 5),
            ("upper-case hex", b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", 20),
            ("leading zeros", b"0005\r\nhello\r\n000\r\n\r\n", b"hello", 20),
            ("16 hex digits", b"0000000000000001\r\nx\r\n0\r\n\r\n", b"x", 26),
            ("extension without value", b"1;a\r\nx\r\n0\r\n\r\n", b"x", 13),
            ("extensions with BWS", b"1 ; a = b ; c\r\nx\r\n0;d\r\n\r\n", b"x", 25),
            ("quoted extension value", b"1;a=\"b c\\\"d\"\r\nx\r\n0\r\n\r\n", b"x", 22),
            ("quoted value then BWS then ;", b"1;a=\"b\" ;c\r\nx\r\n0\r\n\r\n", b"x", 20),
            ("two chunks", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world", 26),
            ("trailer fields", b"1\r\nx\r\n0\r\nVary: *\r\nX-T: \t a \r\n\r\n", b"x", 31),
            ("data may hold CRLF", b"2\r\n\r\n\r\n0\r\n\r\n", b"\r\n", 12),
        ];
        for &(what, input, body, consumed) in cases {
            let got = decode(input, u64::MAX).unwrap_or_else(|e| panic!("{what}: {e:?}"));
            assert_eq!(got, (body.to_vec(), consumed, true), "{what}");
        }
    }

    #[test]
    fn incomplete_bodies_need_more() {
        let cases: &[(&str, &[u8])] = &[
            ("nothing yet", b""),
            ("size only", b"5"),
            ("partial data", b"5\r\nhel"),
            ("missing final CRLF", b"0\r\n"),
            ("inside a trailer", b"0\r\nA: b\r\n"),
        ];
        for &(what, input) in cases {
            let (_, consumed, done) = decode(input, u64::MAX).unwrap();
            assert!(!done, "{what}");
            assert_eq!(consumed, input.len(), "{what}");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn rejected_bodies() {
        let cases: &[(&str, &[u8], HttpError)] = &[
            ("underscore in size", b"6_0\r\n", BAD_SIZE),
            ("missing size", b"\r\nhello\r\n", BAD_SIZE),
            ("space before size", b" 0\r\n\r\n", BAD_SIZE),
            ("space after size without extension", b"0 \r\n\r\n", BAD_SIZE),
            ("minus sign", b"-5\r\n", BAD_SIZE),
            ("plus sign", b"+5\r\n", BAD_SIZE),
            ("0x prefix", b"0x5\r\n", BAD_SIZE),
            ("17 hex digits", b"00000000000000001\r\n", BAD_SIZE),
            ("size over u64", b"10000000000000000\r\n", BAD_SIZE),
            ("extension without size", b";a=b\r\n", BAD_SIZE),
            ("bare LF after size", b"5\n", BAD_SIZE),
            ("bare LF ending an extension", b"5;\nhello", BAD_EXT),
            ("empty extension name", b"5;\r\n", BAD_EXT),
            ("empty extension value", b"5;a=\r\n", BAD_EXT),
            ("BWS after extension before CRLF", b"5;a \r\n", BAD_EXT),
            ("non-token extension name", b"5;a@b\r\n", BAD_EXT),
            ("bare CR in extension", b"5;ext=val\rue\r\n", BadRequest("bare CR in chunk header")),
            ("unterminated quoted value", b"5;a=\"b\r\n", BAD_EXT),
            ("NUL in quoted value", b"5;a=\"\0\"\r\n", BAD_EXT),
            ("junk after quoted value", b"5;a=\"b\"c\r\n", BAD_EXT),
            ("CR not followed by LF after size", b"5\rx", BadRequest("bare CR in chunk header")),
            ("data longer than its size", b"5\r\nhello!\r\n", BadRequest("chunk data not followed by CRLF")),
            ("data followed by bare LF", b"5\r\nhello\n0\r\n\r\n", BadRequest("chunk data not followed by CRLF")),
            ("bare LF ending the body", b"0\r\n\n", BadRequest("bare LF in trailer")),
            ("bare CR in trailer", b"0\r\nA: b\rc\r\n\r\n", BadRequest("bare CR in trailer")),
            ("obs-fold in trailer", b"0\r\nA: b\r\n c\r\n\r\n", BadRequest("obsolete line folding")),
            ("trailer without colon", b"0\r\nAb\r\n\r\n", BadRequest("invalid trailer name")),
            ("space before colon in trailer", b"0\r\nA : b\r\n\r\n", BadRequest("invalid trailer name")),
            ("empty trailer name", b"0\r\n: b\r\n\r\n", BadRequest("invalid trailer name")),
            ("CTL in trailer value", b"0\r\nA: b\x7f\r\n\r\n", BadRequest("control character in trailer value")),
            ("Content-Length trailer", b"0\r\nContent-Length: 9\r\n\r\n", BadRequest("forbidden trailer field")),
            ("Transfer-Encoding trailer", b"0\r\ntransfer-encoding: chunked\r\n\r\n", BadRequest("forbidden trailer field")),
            ("Host trailer", b"0\r\nHOST: evil\r\n\r\n", BadRequest("forbidden trailer field")),
        ];
        for &(what, input, want) in cases {
            assert_eq!(decode(input, u64::MAX).map(|_| ()), Err(want), "{what}");
        }
    }

    #[test]
    fn limits() {
        // Decoded size over max_body is refused when the chunk size is read.
        assert_eq!(
            decode(b"5\r\nhello\r\n1\r\n", 5).map(|_| ()),
            Err(BodyTooLarge)
        );
        assert_eq!(decode(b"6\r\n", 5).map(|_| ()), Err(BodyTooLarge));
        assert!(decode(b"5\r\nhello\r\n0\r\n\r\n", 5).unwrap().2);
        // Sizes whose sum overflows u64 are over any limit.
        let huge = b"ffffffffffffffff\r\n";
        let mut dec = ChunkedDecoder::new(u64::MAX);
        dec.total = 1;
        assert_eq!(dec.decode(huge, &mut Vec::new()), Err(BodyTooLarge));
        // Trailer section over 8 KiB.
        let mut big = b"0\r\n".to_vec();
        for _ in 0..1000 {
            big.extend_from_slice(b"X-Pad: 1234\r\n");
        }
        assert_eq!(decode(&big, u64::MAX).map(|_| ()), Err(HeadersTooLarge));
        // Endless chunk extensions.
        let mut ext = b"1".to_vec();
        ext.extend_from_slice(&b";a".repeat(3000));
        assert_eq!(
            decode(&ext, u64::MAX).map(|_| ()),
            Err(BadRequest("chunk header line too long"))
        );
    }

    #[test]
    fn trailers_are_kept_in_order() {
        let mut dec = ChunkedDecoder::default();
        let input = b"0\r\nVary: *\r\nContent-Type:\ttext/plain \r\n\r\n";
        assert_eq!(
            dec.decode(input, &mut Vec::new()),
            Ok((input.len(), ChunkStatus::Done))
        );
        let want: &[(Vec<u8>, Vec<u8>)] = &[
            (b"Vary".to_vec(), b"*".to_vec()),
            (b"Content-Type".to_vec(), b"text/plain".to_vec()),
        ];
        assert_eq!(dec.trailers(), want);
    }

    #[test]
    fn done_and_failed_are_sticky() {
        let mut dec = ChunkedDecoder::default();
        let mut out = Vec::new();
        assert_eq!(
            dec.decode(b"0\r\n\r\n", &mut out),
            Ok((5, ChunkStatus::Done))
        );
        assert!(dec.is_done());
        assert_eq!(dec.decode(b"more", &mut out), Ok((0, ChunkStatus::Done)));

        let mut dec = ChunkedDecoder::default();
        assert_eq!(dec.decode(b"x", &mut out), Err(BAD_SIZE));
        assert_eq!(dec.decode(b"0\r\n\r\n", &mut out), Err(BAD_SIZE));
    }
}
