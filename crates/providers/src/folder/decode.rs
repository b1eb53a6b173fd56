//! Bytes of an exported file to text: the encoding is sniffed from the byte
//! order mark, as IntuneManagement and PowerShell's `Out-File` write UTF-16LE
//! with a BOM and most other tools UTF-8 with or without one.

/// Why a file's bytes are not text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid UTF-8 at byte {0} (and no byte order mark saying otherwise)")]
    Utf8(usize),
    #[error("not valid UTF-16{0} text after its byte order mark")]
    Utf16(&'static str),
    #[error("UTF-16{0} text with an odd number of bytes")]
    OddLength(&'static str),
}

/// The encodings a file may be in, by its byte order mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Utf8Bom,
    Utf16Le,
    Utf16Be,
}

/// The file's text without its BOM; CRLF is left alone (JSON treats it as whitespace).
pub fn decode(bytes: &[u8]) -> Result<(String, Encoding), DecodeError> {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return utf8(rest).map(|s| (s, Encoding::Utf8Bom));
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, "LE", u16::from_le_bytes).map(|s| (s, Encoding::Utf16Le));
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, "BE", u16::from_be_bytes).map(|s| (s, Encoding::Utf16Be));
    }
    utf8(bytes).map(|s| (s, Encoding::Utf8))
}

fn utf8(bytes: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| DecodeError::Utf8(e.utf8_error().valid_up_to()))
}

fn utf16(bytes: &[u8], name: &'static str, unit: fn([u8; 2]) -> u16) -> Result<String, DecodeError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(DecodeError::OddLength(name));
    }
    let units = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| DecodeError::Utf16(name))
}

/// Text as UTF-16LE with a BOM and CRLF line ends, the way IntuneManagement
/// writes it (tests re-encode files with it).
pub fn encode_utf16le_bom(text: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    for unit in text.replace("\r\n", "\n").replace('\n', "\r\n").encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bom_is_sniffed() {
        let text = "{\r\n  \"displayName\": \"Café ☕\"\r\n}";
        assert_eq!(
            decode(text.as_bytes()).unwrap(),
            (text.to_owned(), Encoding::Utf8)
        );
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(text.as_bytes());
        assert_eq!(decode(&bom).unwrap(), (text.to_owned(), Encoding::Utf8Bom));
        assert_eq!(
            decode(&encode_utf16le_bom(text)).unwrap(),
            (text.to_owned(), Encoding::Utf16Le)
        );
        let mut be = vec![0xFE, 0xFF];
        for u in text.encode_utf16() {
            be.extend_from_slice(&u.to_be_bytes());
        }
        assert_eq!(decode(&be).unwrap(), (text.to_owned(), Encoding::Utf16Be));
    }

    #[test]
    fn broken_text_says_what_is_wrong() {
        assert_eq!(decode(b"{\"a\": \"\xff\"}").unwrap_err(), DecodeError::Utf8(7));
        assert_eq!(
            decode(&[0xFF, 0xFE, 0x41]).unwrap_err(),
            DecodeError::OddLength("LE")
        );
        // A lone high surrogate.
        assert_eq!(
            decode(&[0xFF, 0xFE, 0x00, 0xD8]).unwrap_err(),
            DecodeError::Utf16("LE")
        );
        // UTF-16 without a BOM is not guessed: it is reported.
        assert!(decode(&[b'{', 0, b'}', 0]).is_ok_and(|(s, _)| s.contains('\0')));
    }
}
