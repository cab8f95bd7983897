//! The Confluent wire format of schema-registry records: a magic byte `0`, the schema id as a
//! 4-byte big-endian integer, then the payload (Avro binary, JSON, or for Protobuf the message
//! indexes followed by the message). Shared by Confluent's serializers, Apicurio's in its
//! Confluent mode, Kafka Streams and Quix Streams.

/// The first byte of every framed record.
pub const MAGIC: u8 = 0;

/// Why bytes are not a framed record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer than the 5 bytes of the header.
    #[error(
        "{0} bytes is too short for the Confluent wire format (magic byte 0, a 4-byte schema id, the payload)"
    )]
    TooShort(usize),
    /// The first byte is not 0: not written by a schema-registry serializer.
    #[error(
        "magic byte {0} where the Confluent wire format has 0 (not written by a schema-registry serializer)"
    )]
    BadMagic(u8),
    /// Protobuf message indexes that do not decode.
    #[error("the Protobuf message indexes do not decode")]
    BadIndexes,
}

/// Appends the header for schema `id`; the payload goes after it.
pub fn frame_into(id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
}

/// `payload` framed with schema `id`.
pub fn frame(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    frame_into(id, &mut out);
    out.extend_from_slice(payload);
    out
}

/// The schema id and the payload of a framed record.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), FrameError> {
    if bytes.len() < 5 {
        return Err(FrameError::TooShort(bytes.len()));
    }
    if bytes[0] != MAGIC {
        return Err(FrameError::BadMagic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[5..]))
}

/// Appends Protobuf message indexes (the path to the message type in its file): a zigzag
/// varint count, then each index; `[0]` (the first message) is written as the single byte `0`.
pub fn write_message_indexes(indexes: &[i32], out: &mut Vec<u8>) {
    if indexes == [0] {
        out.push(0);
        return;
    }
    write_zigzag(i64::try_from(indexes.len()).unwrap_or(i64::MAX), out);
    for &i in indexes {
        write_zigzag(i64::from(i), out);
    }
}

/// Reads Protobuf message indexes; returns them and the rest (the message).
pub fn read_message_indexes(bytes: &[u8]) -> Result<(Vec<i32>, &[u8]), FrameError> {
    let (count, mut rest) = read_zigzag(bytes)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    let count = usize::try_from(count).map_err(|_| FrameError::BadIndexes)?;
    if count > rest.len() {
        return Err(FrameError::BadIndexes);
    }
    let mut indexes = Vec::with_capacity(count);
    for _ in 0..count {
        let (i, next) = read_zigzag(rest)?;
        indexes.push(i32::try_from(i).map_err(|_| FrameError::BadIndexes)?);
        rest = next;
    }
    Ok((indexes, rest))
}

pub(crate) fn write_zigzag(n: i64, out: &mut Vec<u8>) {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn read_zigzag(bytes: &[u8]) -> Result<(i64, &[u8]), FrameError> {
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let n = ((v >> 1) as i64) ^ -((v & 1) as i64);
            return Ok((n, &bytes[i + 1..]));
        }
    }
    Err(FrameError::BadIndexes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_the_id_big_endian_after_the_magic_byte() {
        let framed = frame(0x0102_0304, b"payload");
        assert_eq!(&framed[..5], &[0, 1, 2, 3, 4]);
        assert_eq!(unframe(&framed), Ok((0x0102_0304, &b"payload"[..])));
        assert_eq!(unframe(b"\0\0\0"), Err(FrameError::TooShort(3)));
        assert_eq!(unframe(b"{\"a\":1}"), Err(FrameError::BadMagic(b'{')));
    }

    #[test]
    fn message_indexes_round_trip_with_the_first_message_as_one_zero_byte() {
        for indexes in [vec![0], vec![1], vec![0, 2], vec![3, 1, 4], vec![200]] {
            let mut out = Vec::new();
            write_message_indexes(&indexes, &mut out);
            out.extend_from_slice(b"msg");
            assert_eq!(
                read_message_indexes(&out),
                Ok((indexes.clone(), &b"msg"[..]))
            );
        }
        let mut first = Vec::new();
        write_message_indexes(&[0], &mut first);
        assert_eq!(first, [0]);
        // Confluent's documented example: [1] is written as count 1, index 1 (zigzag: 2, 2).
        let mut one = Vec::new();
        write_message_indexes(&[1], &mut one);
        assert_eq!(one, [2, 2]);
        assert_eq!(read_message_indexes(&[0x80]), Err(FrameError::BadIndexes));
    }
}
