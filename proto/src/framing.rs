//! Length-delimited framing: a varint length before each message, several
//! messages per Kafka record. This is ClickHouse's `Protobuf` format (not
//! `ProtobufSingle`), so the Kafka engine reads every flow of a record.

use bytes::Buf;
use prost::Message;

use crate::EncodeDelimited;

/// Why a batch could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// A length prefix or message body is cut short or malformed.
    #[error("message {index} of the batch is malformed: {source}")]
    Malformed {
        /// Position of the bad message in the batch, from 0.
        index: usize,
        /// What prost found.
        source: prost::DecodeError,
    },
}

/// Appends each message, length-delimited, to `buf`.
pub fn encode_batch<'a, M, I>(messages: I, buf: &mut Vec<u8>)
where
    M: EncodeDelimited + 'a,
    I: IntoIterator<Item = &'a M>,
{
    for message in messages {
        message.encode_delimited(buf);
    }
}

/// How many bytes `encode_batch` writes for one message.
pub fn encoded_len<M: Message>(message: &M) -> usize {
    prost::length_delimiter_len(message.encoded_len()) + message.encoded_len()
}

/// Reads every length-delimited message of a batch.
pub fn decode_batch<M: Message + Default>(mut buf: &[u8]) -> Result<Vec<M>, FramingError> {
    let mut messages = Vec::new();
    while buf.has_remaining() {
        let message =
            M::decode_length_delimited(&mut buf).map_err(|source| FramingError::Malformed {
                index: messages.len(),
                source,
            })?;
        messages.push(message);
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlowMessage;
    use crate::v1::{FlowDirection, InterfaceBoundary};
    use proptest::prelude::*;

    fn mapped(v4: [u8; 4]) -> Vec<u8> {
        std::net::Ipv4Addr::from(v4)
            .to_ipv6_mapped()
            .octets()
            .to_vec()
    }

    prop_compose! {
        fn any_flow()(
            time in any::<u64>(), bytes in any::<u64>(), packets in any::<u64>(),
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            ports in any::<(u16, u16)>(), proto in any::<u8>(),
            name in "[a-z0-9.-]{0,20}", labels in proptest::collection::vec(any::<u32>(), 0..4),
            boundary in 0i32..3, direction in 0i32..3,
        ) -> FlowMessage {
            FlowMessage {
                time_received: time,
                bytes,
                packets,
                src_addr: mapped(src),
                dst_addr: mapped(dst),
                src_port: ports.0.into(),
                dst_port: ports.1.into(),
                proto: proto.into(),
                exporter_name: name,
                mpls_labels: labels,
                in_if_boundary: boundary,
                flow_direction: direction,
                ..Default::default()
            }
        }
    }

    proptest! {
        #[test]
        fn batches_round_trip(flows in proptest::collection::vec(any_flow(), 0..20)) {
            let mut buf = Vec::new();
            encode_batch(&flows, &mut buf);
            prop_assert_eq!(buf.len(), flows.iter().map(encoded_len).sum::<usize>());
            let decoded: Vec<FlowMessage> = decode_batch(&buf).unwrap();
            prop_assert_eq!(decoded, flows);
        }

        #[test]
        fn truncated_batches_are_errors_not_panics(flows in proptest::collection::vec(any_flow(), 1..5), cut in 1usize..64) {
            let mut buf = Vec::new();
            encode_batch(&flows, &mut buf);
            let cut = cut.min(buf.len());
            let result = decode_batch::<FlowMessage>(&buf[..buf.len() - cut]);
            // Cutting can land on a message boundary; then fewer messages come back.
            match result {
                Ok(decoded) => prop_assert!(decoded.len() < flows.len()),
                Err(FramingError::Malformed { index, .. }) => prop_assert!(index < flows.len()),
            }
        }
    }

    #[test]
    fn enums_keep_their_numbers() {
        // These numbers are in released data: they must never move.
        assert_eq!(InterfaceBoundary::Undefined as i32, 0);
        assert_eq!(InterfaceBoundary::External as i32, 1);
        assert_eq!(InterfaceBoundary::Internal as i32, 2);
        assert_eq!(FlowDirection::Unknown as i32, 0);
        assert_eq!(FlowDirection::Ingress as i32, 1);
        assert_eq!(FlowDirection::Egress as i32, 2);
    }
}
