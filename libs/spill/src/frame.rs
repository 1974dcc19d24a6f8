//! One record on disk: its length, the CRC-32 of its bytes, the bytes.
//! The checksum is what tells a torn or damaged tail from a record.

/// Length and checksum, both little-endian u32.
pub const FRAME_HEADER_LEN: usize = 8;
/// A larger length can only come from damaged bytes: nothing Keel spills
/// comes near it.
pub const MAX_RECORD_LEN: usize = 16 << 20;

/// The bytes `payload` takes on disk.
pub fn frame_len(payload: &[u8]) -> usize {
    FRAME_HEADER_LEN + payload.len()
}

pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    // Callers keep payloads under MAX_RECORD_LEN, far below u32::MAX.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, intact record and the bytes its frame took.
    Record { payload: &'a [u8], frame_len: usize },
    /// `buffer` ends inside a frame whose whole length is `needed`.
    Incomplete { needed: usize },
    /// A length no record has, or bytes that fail their checksum.
    Damaged,
}

/// Decodes the frame at the start of `buffer`.
pub fn decode(buffer: &[u8]) -> Decoded<'_> {
    let Some(header) = buffer.get(..FRAME_HEADER_LEN) else {
        return Decoded::Incomplete {
            needed: FRAME_HEADER_LEN,
        };
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_LEN {
        return Decoded::Damaged;
    }
    let frame_len = FRAME_HEADER_LEN + len;
    let Some(payload) = buffer.get(FRAME_HEADER_LEN..frame_len) else {
        return Decoded::Incomplete { needed: frame_len };
    };
    if crc32fast::hash(payload) != checksum {
        return Decoded::Damaged;
    }
    Decoded::Record { payload, frame_len }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips() {
        let mut buffer = Vec::new();
        encode(b"first", &mut buffer);
        encode(b"", &mut buffer);
        assert_eq!(
            decode(&buffer),
            Decoded::Record {
                payload: b"first",
                frame_len: 13
            }
        );
        assert_eq!(
            decode(&buffer[13..]),
            Decoded::Record {
                payload: b"",
                frame_len: 8
            }
        );
    }

    #[test]
    fn a_cut_frame_is_incomplete_and_says_how_long_it_is() {
        let mut buffer = Vec::new();
        encode(b"0123456789", &mut buffer);
        assert_eq!(decode(&buffer[..3]), Decoded::Incomplete { needed: 8 });
        assert_eq!(decode(&buffer[..12]), Decoded::Incomplete { needed: 18 });
    }

    #[test]
    fn a_flipped_bit_or_an_impossible_length_is_damage() {
        let mut buffer = Vec::new();
        encode(b"0123456789", &mut buffer);
        buffer[10] ^= 0x01;
        assert_eq!(decode(&buffer), Decoded::Damaged);
        let mut huge = (MAX_RECORD_LEN as u32 + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(decode(&huge), Decoded::Damaged);
    }
}
